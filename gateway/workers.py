"""``voice-gateway --workers N``: N gateway processes on one port.

The parent binds the port (``SO_REUSEPORT``, not listening: it only holds the port and
reports a port in use) and starts N worker processes (``spawn``), each a full gateway
instance listening on a socket of its own on that port. The kernel hashes each new
connection to one of the listening sockets, so connections spread evenly over the
workers, and a resume lands on any worker, which is exactly the multi-instance case.
(One listening socket shared by all workers spread them badly: whichever worker woke
first accepted everything queued, 22–78% of 200 sessions landed on one of two.) When a
worker dies, the connections waiting in its socket's queue are reset; their clients
reconnect and resume on another worker.
That needs a store the workers share, so it is allowed only with Redis
(``GATEWAY_STORE=redis://…``). On SIGTERM or SIGINT the parent passes SIGTERM to
every worker, each drains its sessions as a single gateway does (and releases
them, so the others take them over at once), and the parent exits 0 when all
exited 0. A worker that dies otherwise is started again.

Hand-written rather than uvicorn's own ``--workers`` supervisor, because that one
runs a plain ``uvicorn.Server`` in each child, without the gateway's drain.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from types import FrameType

from gateway.settings import Settings

log = logging.getLogger("gateway.workers")

RESTART_PAUSE_S = 1.0


def refusal(settings: Settings, workers: int) -> str | None:
    """Why ``workers`` processes cannot run with these settings, or ``None``."""
    from gateway.stores.factory import is_distributed

    if workers > 1 and not is_distributed(settings.store_url):
        scheme = settings.store_url.partition("://")[0]
        return (
            f"--workers {workers} needs a store the workers share: with {scheme} every "
            "session is held by one process (a SQLite file belongs to one process), so a "
            "client resuming on another worker would not find its session. Set "
            "GATEWAY_STORE=redis://host:6379/0 to share sessions through Redis "
            "(README, Running several instances)."
        )
    return None


def _serve(settings: Settings, address: tuple[str, int], ready: EventType) -> None:
    """One worker: the whole gateway, on its own listening socket on ``address``."""
    from gateway.app import create_app, drain
    from gateway.cli import GatewayServer, bind_socket, server_config
    from gateway.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    sock = bind_socket(address[0], address[1], shared=True)
    app = create_app(settings)
    config = server_config(settings, app)
    GatewayServer(config, drain=lambda: drain(app, settings), on_started=ready.set).run(
        sockets=[sock]
    )


class Supervisor:
    """Starts, restarts and stops the worker processes."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self._settings = settings
        self._count = workers
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess] = []
        #: Set by each worker once it serves (its lifespan started, its socket listens).
        self._ready: list[EventType] = []
        self._stopping = False

    def _start(self, sock: socket.socket) -> tuple[BaseProcess, EventType]:
        address = (self._settings.host, int(sock.getsockname()[1]))
        ready = self._context.Event()
        proc = self._context.Process(
            target=_serve, args=(self._settings, address, ready), name="voice-gateway-worker"
        )
        proc.start()
        log.info("started worker process [%s]", proc.pid)
        return proc, ready

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self, sock: socket.socket, on_serving: Callable[[], None] = lambda: None) -> int:
        """Serve the port ``sock`` holds (bound with ``SO_REUSEPORT``) until
        SIGTERM/SIGINT, calling ``on_serving`` once every worker serves; 0 when every
        worker exited cleanly."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        announced = False
        try:
            self._workers, self._ready = map(
                list, zip(*(self._start(sock) for _ in range(self._count)), strict=True)
            )
            while not self._stopping:
                time.sleep(0.2)
                if not announced and all(ready.is_set() for ready in self._ready):
                    announced = True
                    on_serving()
                for i, proc in enumerate(self._workers):
                    if not proc.is_alive() and not self._stopping:
                        log.error("worker [%s] died (exit %s); restarting", proc.pid, proc.exitcode)
                        time.sleep(RESTART_PAUSE_S)
                        self._workers[i], self._ready[i] = self._start(sock)
            for proc in self._workers:
                if proc.is_alive() and proc.pid is not None:
                    proc.terminate()  # SIGTERM: the worker drains
            for proc in self._workers:
                proc.join()
        finally:
            sock.close()
        codes = [proc.exitcode for proc in self._workers]
        log.info("all workers stopped (exit %s)", codes)
        return 0 if all(code == 0 for code in codes) else 1
