"""The Starlette application: routes, and the lifespan that builds shared parts once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from gateway import __version__
from gateway.connection import Connection
from gateway.core import wire
from gateway.core.events import ClientEvent, ServerEvent
from gateway.core.session import SessionConfig
from gateway.core.wire import WireError
from gateway.providers.base import LLMProvider
from gateway.providers.offline import OfflineProvider
from gateway.sessions import SessionManager
from gateway.settings import Settings

log = logging.getLogger("gateway")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def build_provider(settings: Settings) -> LLMProvider:
    """Gemini when a key is set, the offline provider otherwise."""
    if settings.uses_gemini and settings.gemini_api_key is not None:
        from gateway.providers.gemini import GeminiProvider

        return GeminiProvider(
            api_key=settings.gemini_api_key.get_secret_value(),
            model=settings.gemini_model,
            base_url=settings.gemini_base_url,
            timeout_s=settings.gemini_timeout_s,
        )
    return OfflineProvider(token_delay_s=settings.offline_token_delay_ms / 1000)


class NativeCodec:
    """The native protocol v1 (``/ws``)."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._max = max_frame_bytes

    def decode(self, frame: str | bytes) -> ClientEvent | WireError:
        return wire.decode(frame, max_bytes=self._max)

    def encode(self, event: ServerEvent) -> str:
        return wire.encode(event)


def create_app(settings: Settings, *, provider: LLMProvider | None = None) -> Starlette:
    """Build the gateway app; ``provider`` overrides the one the settings choose."""
    session_config = SessionConfig(
        provider="",
        model="",
        system_instruction=settings.system_instruction(),
        language=settings.language,
        max_text_chars=settings.max_text_chars,
        replay_capacity=settings.replay_capacity,
        max_chunk_chars=settings.max_chunk_chars,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        llm = provider if provider is not None else build_provider(settings)
        if llm.name == "offline":
            log.warning(
                "No GEMINI_API_KEY or GOOGLE_API_KEY set: serving the built-in OFFLINE provider "
                "(deterministic echo replies, no network). Set GEMINI_API_KEY to talk to Gemini."
            )
        else:
            log.info("provider=%s model=%s", llm.name, llm.model)
        config = replace(session_config, provider=llm.name, model=llm.model)
        try:
            async with asyncio.TaskGroup() as tasks:
                manager = SessionManager(llm, config, tasks)
                app.state.manager = manager
                try:
                    yield
                finally:
                    manager.shutdown()
        finally:
            await llm.aclose()

    async def websocket_native(websocket: WebSocket) -> None:
        manager: SessionManager = websocket.app.state.manager
        await websocket.accept()
        runtime = manager.create()
        connection = Connection(
            websocket, NativeCodec(settings.max_frame_bytes), queue_size=settings.send_queue_size
        )
        log.info("connection open session=%s", runtime.session.id)
        try:
            await connection.serve(runtime)
        finally:
            manager.release(runtime)
            log.info(
                "connection closed session=%s code=%s", runtime.session.id, connection.close_code
            )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    routes: list[Route | WebSocketRoute | Mount] = [
        WebSocketRoute("/ws", websocket_native),
        Route("/health", health),
    ]
    if WEB_DIR.is_dir():
        routes.append(Mount("/", app=StaticFiles(directory=WEB_DIR, html=True), name="web"))
    return Starlette(routes=routes, lifespan=lifespan)
