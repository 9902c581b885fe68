"""Run a real ASGI app under a real uvicorn server on a free loopback port.

The server runs in its own thread with its own event loop, so a test (sync or
async) talks to it over real sockets exactly as a client would.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """uvicorn.Server that signals a threading.Event once it is serving."""

    def __init__(self, config: uvicorn.Config, started: threading.Event) -> None:
        super().__init__(config)
        self._started_event = started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._started_event.set()

    def install_signal_handlers(self) -> None:  # not in the main thread
        return None


class RunningServer:
    """A uvicorn server on 127.0.0.1:<port>, serving in a background thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        # proto=IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets
        # whose proto says TCP, and without it Nagle delays small frames by ~40 ms.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.host = "127.0.0.1"
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "on")
        self._started = threading.Event()
        self.server = _Server(uvicorn.Config(app, **config), self._started)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self._sock]))
        except BaseException as exc:  # surfaced by start()/stop()
            self._error = exc
        finally:
            self._started.set()

    def start(self, timeout: float = 15.0) -> RunningServer:
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError("uvicorn did not start in time")
        if self._error is not None or not self.server.started:
            raise RuntimeError("uvicorn failed to start") from self._error
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError("uvicorn did not stop in time")
        if self._error is not None:
            raise RuntimeError("uvicorn crashed") from self._error


@contextmanager
def running(app: Any, **config: Any) -> Iterator[RunningServer]:
    """Serve ``app`` for the duration of the ``with`` block."""
    server = RunningServer(app, **config).start()
    try:
        yield server
    finally:
        server.stop()
