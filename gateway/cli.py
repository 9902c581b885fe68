"""``voice-gateway`` / ``python -m gateway``: serve the gateway with uvicorn."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence

import uvicorn

from gateway import __version__
from gateway.app import create_app, drain, uvicorn_options
from gateway.logs import configure_logging
from gateway.settings import SettingsError, load_settings
from gateway.workers import Supervisor, refusal


class GatewayServer(uvicorn.Server):
    """uvicorn, with a graceful drain of the sessions between "stop accepting" and
    "close every connection", and exit status 0 after a clean SIGTERM."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain

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
        "command", nargs="?", default="serve", choices=["serve"], help="what to do (default: serve)"
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
        default=1,
        help="worker processes sharing the port (default 1; more need GATEWAY_STORE=redis://...)",
    )
    parser.add_argument("--version", action="version", version=f"voice-gateway {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, load settings, serve until interrupted; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.stderr.write(f"voice-gateway: {exc}\n")
        return 2
    updates = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("log_level", args.log_level))
        if v is not None
    }
    settings = settings.model_copy(update=updates)
    if args.workers < 1 or (why := refusal(settings, args.workers)) is not None:
        sys.stderr.write(f"voice-gateway: {why or '--workers must be at least 1'}\n")
        return 2
    configure_logging(settings.log_level)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.auth_enabled:
        logging.getLogger("gateway").warning(
            "!!! SECURITY: listening on %s with NO authentication: anyone who can reach this "
            "port can open sessions and spend your model quota. Set GATEWAY_API_KEYS or "
            "GATEWAY_JWT_SECRET / GATEWAY_JWT_PUBLIC_KEY (see README, Security). !!!",
            settings.host,
        )
    if args.workers > 1:
        config = uvicorn.Config(
            "gateway.app:create_app",
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=None,
            proxy_headers=True,
            **uvicorn_options(settings),
        )
        logging.getLogger("gateway").info(
            "voice-gateway %s: %d workers on http://%s:%s",
            __version__,
            args.workers,
            settings.host,
            settings.port,
        )
        return Supervisor(settings, config, args.workers).run()
    app = create_app(settings)
    logging.getLogger("gateway").info(
        "voice-gateway %s listening on http://%s:%s (WebSocket: ws://%s:%s/ws)",
        __version__,
        settings.host,
        settings.port,
        settings.host,
        settings.port,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        proxy_headers=True,
        **uvicorn_options(settings),
    )
    GatewayServer(config, drain=lambda: drain(app, settings)).run()
    return 0
