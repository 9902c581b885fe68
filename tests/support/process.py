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
        if not k.startswith(ENV_PREFIXES)
        and k not in ("GOOGLE_API_KEY", "PORT", "FORWARDED_ALLOW_IPS")
    }
    env.update(extra)
    return env


#: ``python -m gateway`` with its soft RLIMIT_NOFILE lowered to argv[1] first.
_WITH_NOFILE = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, "
    "(int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
    "sys.argv = ['gateway', *sys.argv[2:]]; "
    "runpy.run_module('gateway', run_name='__main__')"
)


@contextmanager
def gateway_process(
    *args: str, nofile: int | None = None, **env: str
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Start ``python -m gateway`` and wait (by reading its log) until it serves;
    ``nofile`` lowers its file-descriptor limit.

    On exit the process gets SIGTERM unless the test already ended it, and the
    rest of its output is appended to the yielded list of lines.
    """
    command = [sys.executable, "-m", "gateway", *args]
    if nofile is not None:
        command = [sys.executable, "-c", _WITH_NOFILE, str(nofile), *args]
    proc = subprocess.Popen(
        command,
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
