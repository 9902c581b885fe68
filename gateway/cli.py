"""``voice-gateway`` / ``python -m gateway``: serve the gateway with uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence

import uvicorn
from starlette.applications import Starlette

from gateway import __version__
from gateway.app import create_app, drain, uvicorn_options
from gateway.check import CheckFailed, check_provider
from gateway.heap import tune_collector
from gateway.logs import configure_logging
from gateway.providers.factory import build_provider
from gateway.settings import Settings, SettingsError, load_settings, unknown_settings
from gateway.workers import Supervisor, refusal

log = logging.getLogger("gateway")


class GatewayServer(uvicorn.Server):
    """uvicorn, with a graceful drain of the sessions between "stop accepting" and
    "close every connection", and exit status 0 after a clean SIGTERM."""

    def __init__(
        self,
        config: uvicorn.Config,
        drain: Callable[[], Awaitable[None]],
        on_started: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            tune_collector()
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting first
        await self._drain()
        await super().shutdown(sockets)
        # uvicorn re-raises the signal it caught; a completed drain is a clean exit.
        self._captured_signals.clear()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-gateway",
        description="Realtime voice gateway: WebSocket sessions in, Gemini out. "
        "Settings come from the environment and .env; these flags override them.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "check"],
        help="what to do (default: serve); check: verify the provider's key and model "
        "with one small request, and exit",
    )
    parser.add_argument("--host", help="address to bind (GATEWAY_HOST, default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="port to bind (GATEWAY_PORT or PORT, default 8000)"
    )
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (GATEWAY_LOG_LEVEL, default info)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes sharing the port (default 1; more need GATEWAY_STORE=redis://...)",
    )
    parser.add_argument("--version", action="version", version=f"voice-gateway {__version__}")
    return parser


def bind_socket(
    host: str, port: int, *, listen: bool = True, shared: bool = False
) -> socket.socket:
    """A TCP socket bound to ``host:port``, listening unless ``listen`` is false;
    ``OSError`` if it cannot be had. ``shared``: with ``SO_REUSEPORT``, so that each
    worker binds its own socket on the port (see :mod:`gateway.workers`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_error(host: str, port: int, exc: OSError) -> str:
    """One line that says why ``host:port`` cannot be listened on, and what to do."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is already in use (another gateway?); "
            "stop it or choose another port with --port or GATEWAY_PORT"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: no such local address (check --host or GATEWAY_HOST)"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def _listening(settings: Settings, sock: socket.socket) -> Callable[[], None]:
    def announce() -> None:
        port = sock.getsockname()[1]
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        log.info(
            "voice-gateway %s listening on http://%s:%s (WebSocket: ws://%s:%s/ws)",
            __version__,
            host,
            port,
            host,
            port,
        )

    return announce


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, load settings, serve until interrupted; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.stderr.write(f"voice-gateway: {exc}\n")
        return 2
    workers = 1 if args.workers is None else args.workers
    if workers < 1 or (why := refusal(settings, workers)) is not None:
        sys.stderr.write(f"voice-gateway: {why or '--workers must be at least 1'}\n")
        return 2
    updates = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("log_level", args.log_level))
        if v is not None
    }
    settings = settings.model_copy(update=updates)
    configure_logging(settings.log_level, settings.log_format)
    for warning in unknown_settings():
        log.warning("%s", warning)
    if args.command == "check":
        return asyncio.run(_check(settings))
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.auth_enabled:
        log.warning(
            "!!! SECURITY: listening on %s with NO authentication: anyone who can reach this "
            "port can open sessions and spend your model quota. Set GATEWAY_API_KEYS or "
            "GATEWAY_JWT_SECRET / GATEWAY_JWT_PUBLIC_KEY (see README, Security). !!!",
            settings.host,
        )
    try:
        # With workers, this socket only holds the port: each worker listens on its own.
        sock = bind_socket(settings.host, settings.port, listen=workers == 1, shared=workers > 1)
    except OSError as exc:
        sys.stderr.write(f"voice-gateway: {bind_error(settings.host, settings.port, exc)}\n")
        return 1
    if workers > 1:
        return Supervisor(settings, workers).run(sock, on_serving=_listening(settings, sock))
    app = create_app(settings)
    config = server_config(settings, app)
    server = GatewayServer(
        config, drain=lambda: drain(app, settings), on_started=_listening(settings, sock)
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def server_config(settings: Settings, app: Starlette) -> uvicorn.Config:
    """How uvicorn serves ``app`` (one process, or each ``--workers`` worker)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        proxy_headers=True,
        **uvicorn_options(settings),
    )


async def _check(settings: Settings) -> int:
    """``voice-gateway check``: 0 when the provider answered, 1 when it did not."""
    provider = build_provider(settings)
    try:
        if provider.name == "offline":
            sys.stdout.write(
                "voice-gateway: no GEMINI_API_KEY or OPENAI_API_KEY is set: the offline "
                "provider needs no check\n"
            )
            return 0
        result = await check_provider(provider, timeout_s=settings.first_token_timeout_s)
    except CheckFailed as failed:
        sys.stderr.write(f"voice-gateway: check FAILED: {failed}\n")
        return 1
    finally:
        await provider.aclose()
    sys.stdout.write(f"voice-gateway: {result.describe()}\n")
    return 0
