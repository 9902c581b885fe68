"""A real ``redis-server`` for the tests: started on a free port in a temporary directory.

Debian's ``redis-server`` package provides the binary (``.ci/run`` installs it); the
tests fail, never skip, without it. The fixtures are a pytest plugin:

* ``redis_server`` (session scope): one server for the whole run, AOF ``everysec``;
* ``redis_url``: that server's URL, flushed before each test.

:class:`RedisServer` can also be started by a test itself to kill, pause or restart it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.process import free_port

STARTUP_TIMEOUT_S = 10.0


def redis_binary() -> str:
    """The ``redis-server`` executable; fails the test when it is not installed."""
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail(
            "redis-server is not installed: the Redis store tests need Debian's redis-server "
            "(apt-get install redis-server; .ci/run does it)"
        )
    return found


def _command(sock: socket.socket, *parts: str) -> bytes:
    """Send one RESP command and return the first reply line (enough for PING, FLUSHALL)."""
    wire = f"*{len(parts)}\r\n" + "".join(f"${len(p)}\r\n{p}\r\n" for p in parts)
    sock.sendall(wire.encode())
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("redis-server closed the connection")
        reply += chunk
    return reply


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 with its data in ``directory``."""

    def __init__(
        self, directory: Path, *, port: int | None = None, appendfsync: str = "everysec"
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server (again, on the same port and directory) and wait for PONG."""
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no" if self.appendfsync == "no-aof" else "yes",
            "--appendfsync", "everysec" if self.appendfsync == "no-aof" else self.appendfsync,
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                if self.command("PING").startswith(b"+PONG"):
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.directory / "redis.log"
                raise RuntimeError(
                    "redis-server did not start:\n"
                    + (log.read_text(errors="replace") if log.exists() else "")
                )
            time.sleep(0.02)

    def command(self, *parts: str) -> bytes:
        """Run one command over a fresh connection; the raw first reply line."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            return _command(sock, *parts)

    def flush(self) -> None:
        reply = self.command("FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def kill(self) -> None:
        """SIGKILL, as a crash: only what the AOF holds comes back on restart."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (redis-server flushes the AOF) and wait."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the whole test run (AOF everysec, no RDB)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, with every key flushed before the test."""
    redis_server.flush()
    return redis_server.url
