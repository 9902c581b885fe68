"""Processes for the benchmark: start them pinned to a core, read their CPU and memory.

CPU time and resident memory come from ``/proc/<pid>/stat`` and ``/proc/<pid>/status``
(Linux), so they count the measured process alone, all its threads included.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


def cores() -> tuple[int | None, int | None]:
    """(server core, client core), or (None, None) when there are fewer than two."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return available[0], available[1]


def pin_self(core: int | None) -> None:
    """Run this process on ``core`` only (nothing when ``core`` is None)."""
    if core is not None:
        os.sched_setaffinity(0, {core})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """A started process and how to reach it."""

    popen: subprocess.Popen[str]
    port: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_s(self) -> float:
        """User plus system CPU seconds used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def cpu_ns(self) -> int:
        """CPU nanoseconds its live threads ran (``/proc/<pid>/task/*/schedstat``): finer
        than :meth:`cpu_s`'s clock ticks, for short intervals; a thread that ended
        in between is not counted."""
        total = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # the thread ended meanwhile
        return total

    def rss_kb(self) -> int:
        """Resident set size, KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def _wait_port(port: int, popen: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"process exited with {popen.returncode} before serving")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing served on port {port} in {timeout} s")


@contextmanager
def started(
    args: Sequence[str],
    *,
    core: int | None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    log: Path | None = None,
    timeout: float = 30.0,
) -> Iterator[Proc]:
    """Start ``python args…`` on ``core``; yield once it serves, SIGTERM it afterwards.

    With ``port`` the process is expected to listen there; without, it must print
    ``PORT <n>`` as its first line (bench/fake_model.py and bench/relay.py do).
    Its output (after that line) goes to ``log``, or nowhere.
    """

    def pin() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})

    sink = log.open("a") if log is not None else subprocess.DEVNULL
    popen = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE if port is None else sink,
        stderr=sink,
        text=True,
        preexec_fn=pin,
    )
    try:
        if port is None:
            assert popen.stdout is not None
            line = popen.stdout.readline()
            if not line.startswith("PORT "):
                raise RuntimeError(f"{args[0]} did not report its port: {line!r}")
            port = int(line.split()[1])
        _wait_port(port, popen, timeout)
        yield Proc(popen, port)
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        if popen.stdout is not None:
            popen.stdout.close()
        if log is not None and not isinstance(sink, int):
            sink.close()
