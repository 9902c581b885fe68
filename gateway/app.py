"""The Starlette application: routes, and the lifespan that builds shared parts once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Scope
from starlette.websockets import WebSocket

from gateway.adapters import adapter_routes
from gateway.api import api_routes
from gateway.auth import chosen_subprotocol
from gateway.cluster import raise_if_cancelled
from gateway.connection import Connection, InputLimits, SessionPort
from gateway.core import wire
from gateway.core.codes import CloseCode
from gateway.core.events import ClientEvent, Heartbeat, ServerEvent
from gateway.core.replay import LoggedEvent
from gateway.core.session import SessionConfig
from gateway.core.wire import WireError
from gateway.deps import manager_of, store_of
from gateway.errors import AuthError
from gateway.generation import ProviderPolicy
from gateway.guard import Guard
from gateway.pipeline import StorePolicy
from gateway.providers.base import LLMProvider
from gateway.providers.offline import OfflineProvider
from gateway.serving import close_quietly, serve_socket
from gateway.sessions import ManagerConfig, SessionManager
from gateway.settings import Settings
from gateway.stores.base import StoreError
from gateway.stores.factory import cluster_for, is_distributed, open_store

log = logging.getLogger("gateway")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class WebFiles(StaticFiles):
    """``web/``, revalidated on every load (ETag, so usually a 304), so that a
    browser never runs an old ``app.js`` against a newer gateway."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


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

    def encode(self, frame: LoggedEvent, event: ServerEvent | None) -> str:
        return frame.data

    def heartbeat(self, session_id: str, seq: int) -> str:
        return wire.encode(Heartbeat(session_id=session_id, seq=seq))


def _resume_params(websocket: WebSocket) -> tuple[str, str, int] | str | None:
    """``(session_id, token, last_seq)`` when the client resumes, an error text if
    the parameters are wrong, ``None`` for a new session."""
    params = websocket.query_params
    session_id = params.get("session_id")
    if session_id is None:
        return None
    token = params.get("resume_token")
    if not token:
        return "resume_token is required with session_id"
    raw = params.get("last_seq", "0")
    if not raw.isdigit() or len(raw) > 18:
        return "last_seq must be a non-negative integer"
    return session_id, token, int(raw)


async def _sweep_forever(manager: SessionManager, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.sweep_interval_s)
        try:
            await manager.sweep(settings.session_ttl_s)
        except StoreError:
            log.exception("session sweep failed; will try again")
        raise_if_cancelled()  # a cancel the store client swallowed or turned into an error


def create_app(settings: Settings, *, provider: LLMProvider | None = None) -> Starlette:
    """Build the gateway app; ``provider`` overrides the one the settings choose."""
    session_config = SessionConfig(
        provider="",
        model="",
        system_instruction=settings.system_instruction(),
        language=settings.language,
        max_text_chars=settings.max_text_chars,
        max_chunk_chars=settings.max_chunk_chars,
    )

    guard = Guard.from_settings(settings)

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
        store = await open_store(
            settings.store_url, ttl_s=settings.session_ttl_s, max_events=settings.replay_capacity
        )
        log.info("session store: %s", settings.store_url.split("://", 1)[0])
        config = ManagerConfig(
            session=replace(session_config, provider=llm.name, model=llm.model),
            max_sessions_per_principal=settings.max_sessions_per_principal,
            replay_capacity=settings.replay_capacity,
            grace_s=settings.resume_grace_s,
            provider=ProviderPolicy(
                first_token_timeout_s=settings.first_token_timeout_s,
                token_timeout_s=settings.token_timeout_s,
                retries=settings.provider_retries,
                backoff_s=settings.provider_backoff_s,
            ),
            store=StorePolicy(retry_budget_s=settings.store_retry_s),
            handover_s=settings.drain_s + settings.instance_ttl_s + 2,
        )
        try:
            async with cluster_for(store, instance_ttl_s=settings.instance_ttl_s) as cluster:
                manager = SessionManager(provider=llm, store=store, config=config, cluster=cluster)
                if settings.store_url.startswith("sqlite") or is_distributed(settings.store_url):
                    # SQLite: this process alone writes the file (it holds its lock), so
                    # any turn still streaming was cut by a crash. Redis: only turns
                    # whose owner instance is dead are listed.
                    await manager.recover()
                app.state.manager = manager
                app.state.store = store
                app.state.guard = guard
                loop = asyncio.get_running_loop()
                background = {loop.create_task(_sweep_forever(manager, settings), name="sweeper")}
                if cluster.distributed:
                    background.add(loop.create_task(manager.serve_signals(), name="signals"))
                try:
                    yield
                finally:
                    for task in background:
                        task.cancel()
                    await asyncio.wait(background)
                    await manager.shutdown()
        finally:
            await store.aclose()
            await llm.aclose()

    async def websocket_native(websocket: WebSocket) -> None:
        manager = manager_of(websocket)
        guard: Guard = websocket.app.state.guard
        try:
            principal = guard.check_websocket(websocket)
        except AuthError as refused:
            log.info("websocket refused status=%s code=%s", refused.status, refused.code)
            await websocket.send_denial_response(_denial(refused))
            return
        name = principal.name if principal else None
        resume = _resume_params(websocket)
        await websocket.accept(subprotocol=chosen_subprotocol(websocket))
        if isinstance(resume, str):
            await close_quietly(websocket, CloseCode.BAD_RESUME, resume)
            return

        async def opener(connection: Connection) -> SessionPort:
            if resume is None:
                runtime, _ = await manager.start(connection, principal=name)
                return runtime
            session_id, token, last_seq = resume
            return await manager.resume_or_follow(
                session_id, token, connection, last_seq=last_seq, principal=name
            )

        await serve_socket(
            websocket,
            NativeCodec(settings.max_frame_bytes),
            opener,
            settings=settings,
            route="ws",
            limits=input_limits(settings),
            principal=name,
        )

    routes: list[BaseRoute] = [
        WebSocketRoute("/ws", websocket_native),
        *api_routes(manager_of, store_of),
        *adapter_routes(settings),
    ]
    if WEB_DIR.is_dir():
        routes.append(Mount("/", app=WebFiles(directory=WEB_DIR, html=True), name="web"))
    return Starlette(routes=routes, lifespan=lifespan)


def input_limits(settings: Settings) -> InputLimits:
    """What one client connection may send."""
    return InputLimits(
        rate_per_s=settings.rate_per_s,
        burst=settings.rate_burst,
        idle_timeout_s=settings.idle_timeout_s,
    )


def _denial(refused: AuthError) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": refused.code, "message": refused.message}},
        status_code=refused.status,
        headers={"WWW-Authenticate": "Bearer"} if refused.status == 401 else None,
    )


async def drain(app: Starlette, settings: Settings) -> None:
    """Graceful shutdown of the sessions the app serves (before connections close)."""
    manager: SessionManager | None = getattr(app.state, "manager", None)
    if manager is not None:
        await manager.drain(settings.drain_s, reconnect_ms=settings.reconnect_delay_ms)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Server options that belong to the gateway's behaviour (used by the CLI and tests)."""
    return {
        "ws": "websockets-sansio",
        "ws_ping_interval": settings.ping_interval_s,
        "ws_ping_timeout": settings.ping_timeout_s,
    }
