"""Run the gateway as users do: a real ``python -m gateway`` process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.gateway import ENV_PREFIXES

STARTUP_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any gateway or Gemini settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(ENV_PREFIXES) and k not in ("GOOGLE_API_KEY", "PORT")
    }
    env.update(extra)
    return env


@contextmanager
def gateway_process(*args: str, **env: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Start ``python -m gateway`` and wait (by reading its log) until it serves.

    On exit the process gets SIGTERM unless the test already ended it, and the
    rest of its output is appended to the yielded list of lines.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "listening on http" in line or "Uvicorn running on" in line:
                break
        else:
            raise AssertionError("gateway exited before serving:\n" + "".join(lines))
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=STARTUP_TIMEOUT_S)
        lines.extend(rest.splitlines(keepends=True))
