"""Processes for the benchmark: start them pinned to a core, read their CPU and memory.

CPU time and resident memory come from ``/proc/<pid>/stat`` and ``/proc/<pid>/status``
(Linux), so they count the measured process alone, all its threads included.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Sequence
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


def pin_self(core: int | Collection[int] | None) -> None:
    """Run this process on ``core`` only, or on that set of cores (nothing when None)."""
    if core is not None:
        os.sched_setaffinity(0, {core} if isinstance(core, int) else set(core))


def cpu_s_of(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_kb_of(pid: int) -> int:
    """Resident set size of process ``pid``, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def children(pid: int, marker: str = "") -> list[int]:
    """The live child processes of ``pid`` whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
        if ppid == pid and marker in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def established(pid: int, port: int) -> int:
    """How many established TCP connections to local ``port`` process ``pid`` holds."""
    return tcp_sockets(pid, port, state="01")


def tcp_sockets(pid: int, port: int, *, state: str) -> int:
    """How many TCP sockets on local ``port`` in ``state`` (``/proc/net/tcp``'s hex
    code: ``01`` established, ``0A`` listening) process ``pid`` holds."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == state and int(cols[1].rpartition(":")[2], 16) == port:
                inodes.add(cols[9])
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


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
        return cpu_s_of(self.pid)

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
        return rss_kb_of(self.pid)


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
    core: int | Collection[int] | None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    log: Path | None = None,
    timeout: float = 30.0,
    executable: str | None = None,
) -> Iterator[Proc]:
    """Start ``python args…`` (or ``executable args…``) on ``core`` (one, or a set);
    yield once it serves, SIGTERM it afterwards.

    With ``port`` the process is expected to listen there; without, it must print
    ``PORT <n>`` as its first line (bench/fake_model.py and bench/relay.py do).
    Its output (after that line) goes to ``log``, or nowhere.
    """
    sink = log.open("a") if log is not None else subprocess.DEVNULL
    popen = subprocess.Popen(
        [executable or sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE if port is None else sink,
        stderr=sink,
        text=True,
        preexec_fn=lambda: pin_self(core),
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


@contextmanager
def redis_server(directory: Path, *, core: int | None) -> Iterator[Proc]:
    """A ``redis-server`` on a free port of 127.0.0.1 with its files in ``directory``,
    persisting as the README advises (AOF, ``appendfsync everysec``, no RDB)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
        "--daemonize", "no", "--logfile", str(directory / "redis.log"),
    ]  # fmt: skip
    with started(args, core=core, port=port, executable=binary) as proc:
        yield proc
