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
from gateway.auth import AuthError, chosen_subprotocol
from gateway.check import CheckFailed, check_provider
from gateway.connection import Connection, InputLimits
from gateway.core import wire
from gateway.core.codes import CloseCode
from gateway.core.events import ClientEvent, Heartbeat, ServerEvent
from gateway.core.replay import LoggedEvent
from gateway.core.session import SessionConfig
from gateway.core.wire import WireError
from gateway.deps import manager_of, store_of
from gateway.guard import Guard
from gateway.providers.base import LLMProvider
from gateway.providers.factory import build_provider
from gateway.runtime import ProviderPolicy
from gateway.sessions import ManagerConfig, ResumeRefused, SessionManager, TooManySessions
from gateway.settings import Settings
from gateway.stores.base import StoreError
from gateway.stores.factory import open_store

log = logging.getLogger("gateway")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class WebFiles(StaticFiles):
    """``web/``, revalidated on every load (ETag, so usually a 304), so that a
    browser never runs an old ``app.js`` against a newer gateway."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


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


def create_app(settings: Settings, *, provider: LLMProvider | None = None) -> Starlette:
    """Build the gateway app; ``provider`` overrides the one the settings choose."""
    session_config = SessionConfig(
        provider="",
        model="",
        system_instruction=settings.system_instruction(),
        language=settings.language,
        max_text_chars=settings.max_text_chars,
        max_chunk_chars=settings.max_chunk_chars,
        chunk_mode=settings.chunking,
        generation=settings.generation(),
        context=settings.context_budget(),
        max_session_tokens=settings.max_session_tokens,
        fallback_text=settings.fallback_lines(),
    )

    guard = Guard.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        llm = provider if provider is not None else build_provider(settings)
        if llm.name == "offline":
            log.warning(
                "No GEMINI_API_KEY or OPENAI_API_KEY set: serving the built-in OFFLINE provider "
                "(deterministic echo replies, no network). Set GEMINI_API_KEY to talk to Gemini."
            )
        else:
            log.info("provider=%s model=%s", llm.name, llm.model)
            if settings.check_provider:
                await _check_at_start(llm)
        store = await open_store(settings.store_url)
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
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                manager = SessionManager(provider=llm, store=store, config=config, tasks=tasks)
                app.state.manager = manager
                app.state.store = store
                app.state.guard = guard
                sweeper = tasks.create_task(_sweep_forever(manager, settings), name="sweeper")
                try:
                    yield
                finally:
                    sweeper.cancel()
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
            await websocket.close(CloseCode.BAD_RESUME, resume)
            return
        busy = guard.connections.acquire(name)
        if busy is not None:
            await websocket.close(CloseCode.TRY_AGAIN_LATER, busy)
            return
        try:
            await _serve_native(websocket, manager, resume, name)
        finally:
            guard.connections.release(name)

    async def _serve_native(
        websocket: WebSocket,
        manager: SessionManager,
        resume: tuple[str, str, int] | None,
        principal: str | None,
    ) -> None:
        try:
            if resume is None:
                runtime, token = await manager.start(principal=principal)
                last_seq: int | None = None
            else:
                session_id, token, last_seq = resume
                runtime = await manager.resume(session_id, token, principal=principal)
        except ResumeRefused as refused:
            log.info("resume refused code=%s", refused.code)
            await websocket.close(refused.code, refused.reason)
            return
        except TooManySessions as exc:
            await websocket.close(CloseCode.TOO_MANY_SESSIONS, str(exc))
            return
        except StoreError:
            log.exception("session store failed while opening a session")
            await websocket.close(CloseCode.INTERNAL_ERROR, "session store unavailable")
            return
        connection = Connection(
            websocket,
            NativeCodec(settings.max_frame_bytes),
            session_id=runtime.session.id,
            queue_size=settings.send_queue_size,
            heartbeat_s=settings.heartbeat_s,
            limits=input_limits(settings),
        )
        log.info("connection open session=%s resumed=%s", runtime.session.id, resume is not None)
        try:
            await connection.serve(runtime, resume_token=token, last_seq=last_seq)
        finally:
            log.info(
                "connection closed session=%s code=%s", runtime.session.id, connection.close_code
            )

    routes: list[BaseRoute] = [
        WebSocketRoute("/ws", websocket_native),
        *api_routes(manager_of, store_of),
        *adapter_routes(settings),
    ]
    if WEB_DIR.is_dir():
        routes.append(Mount("/", app=WebFiles(directory=WEB_DIR, html=True), name="web"))
    return Starlette(routes=routes, lifespan=lifespan)


async def _check_at_start(llm: LLMProvider) -> None:
    """``GATEWAY_CHECK_PROVIDER``: refuse to start when the key or model is wrong."""
    try:
        result = await check_provider(llm)
    except CheckFailed as failed:
        await llm.aclose()
        log.error("provider check failed, not starting: %s", failed)
        raise
    log.info("provider check: %s", result.describe())


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
        "ws_per_message_deflate": settings.ws_deflate,
    }
