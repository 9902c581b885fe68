"""The Starlette application: routes, and the lifespan that builds shared parts once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ExceptionHandler, Scope
from starlette.websockets import WebSocket

from gateway.adapters import adapter_routes
from gateway.api import api_routes
from gateway.auth import chosen_subprotocol
from gateway.budgets import CappedStore
from gateway.check import CheckFailed, check_provider
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
from gateway.guard import Guard, log_posture
from gateway.hosts import BrowserGate
from gateway.instrumented import InstrumentedProvider, InstrumentedStore, InstrumentedTools
from gateway.logformat import describe_store
from gateway.ops import Telemetry, ops_middleware, ops_routes
from gateway.pipeline import TOUCH_EVERY_S, StorePolicy
from gateway.providers.base import LLMProvider
from gateway.providers.factory import build_provider
from gateway.responses import problem
from gateway.serving import close_quietly, serve_socket
from gateway.sessions import ManagerConfig, SessionManager
from gateway.settings import Settings
from gateway.stores.base import SessionStore, StoreError, StoreLocked
from gateway.stores.factory import cluster_for, is_distributed, open_store
from gateway.tasks import TaskSet
from gateway.tenants import address_principal
from gateway.tools.webhook import WebhookRunner
from gateway.tracing import Tracing
from gateway.transport import TransportLimits, protocol_classes, socket_cap
from gateway.wsroute import SocketRoute

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
        raise_if_cancelled()  # a cancel the store client swallowed or turned into an error


def create_app(
    settings: Settings,
    *,
    provider: LLMProvider | None = None,
    store: Callable[[SessionStore], SessionStore] | None = None,
    tracing: Tracing | None = None,
) -> Starlette:
    """Build the gateway app; ``provider`` overrides the one the settings choose,
    ``store`` wraps the opened store (fault injection in tests), and ``tracing`` the
    tracing the ``OTEL_*`` variables configure."""
    telemetry = Telemetry.from_settings(settings, tracing)
    tools_file = settings.tools()
    session_config = SessionConfig(
        provider="",
        model="",
        system_instruction=settings.system_instruction(),
        language=settings.language,
        max_text_chars=settings.max_text_chars,
        max_instructions_chars=settings.max_instructions_chars,
        max_session_chars=settings.max_session_chars,
        max_chunk_chars=settings.max_chunk_chars,
        chunk_mode=settings.chunking,
        generation=settings.generation(),
        context=settings.context_budget(),
        max_session_tokens=settings.max_session_tokens,
        fallback_text=settings.fallback_lines(),
        tools=(*settings.control_tools(), *tools_file.specs),
        tool_timeout_s=settings.tool_timeout_s,
    )

    guard = Guard.from_settings(settings)
    wrap_store = store

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
        llm = InstrumentedProvider(llm, telemetry.metrics, telemetry.tracing)
        try:
            opened = await open_store(
                settings.store_url,
                ttl_s=settings.session_ttl_s,
                max_events=settings.replay_capacity,
            )
        except StoreLocked as locked:
            log.error("%s", locked)
            raise
        capped = await CappedStore.wrap(  # GATEWAY_MAX_STORED_SESSIONS (gateway.budgets)
            opened if wrap_store is None else wrap_store(opened),
            max_sessions=settings.max_stored_sessions,
            log_events=settings.replay_capacity,
        )
        store = InstrumentedStore(capped, telemetry.metrics, telemetry.tracing)
        log.info("session store: %s", describe_store(settings.store_url))
        log_posture(settings)
        secret = settings.tools_secret.get_secret_value() if settings.tools_secret else None
        runner = (
            InstrumentedTools(
                WebhookRunner(tools_file, secret=secret),
                [tool.spec.name for tool in tools_file.tools],
                telemetry.metrics,
                telemetry.tracing,
            )
            if tools_file.tools
            else None
        )
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
            store=store_policy(settings),
            handover_s=settings.drain_s + settings.instance_ttl_s + 2,
            tools=runner,
        )
        try:
            # The cluster works on the backend itself; the manager writes through the
            # wrappers, its commits fenced by each session's lease.
            async with cluster_for(opened, instance_ttl_s=settings.instance_ttl_s) as cluster:
                manager = SessionManager(
                    provider=llm,
                    store=store,
                    config=config,
                    cluster=cluster,
                    ephemeral_store=lambda inner: InstrumentedStore(
                        inner, telemetry.metrics, telemetry.tracing
                    ),
                )
                if settings.store_url.startswith("sqlite") or is_distributed(settings.store_url):
                    # SQLite: this process alone writes the file (it holds its lock), so
                    # any turn still streaming was cut by a crash. Redis: only turns
                    # whose owner instance is dead are listed.
                    await manager.recover()
                app.state.manager = manager
                app.state.store = store
                app.state.guard = guard
                telemetry.metrics.count_live_sessions(manager.__len__)
                background = TaskSet("lifespan", on_error=_background_died)
                background.spawn(_sweep_forever(manager, settings), name="sweeper")
                if cluster.distributed:
                    background.spawn(manager.serve_signals(), name="signals")
                try:
                    yield
                finally:
                    await background.aclose(timeout_s=BACKGROUND_STOP_S)
                    await manager.shutdown()
        finally:
            await store.aclose()
            await llm.aclose()
            if runner is not None:
                await runner.aclose()

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
                owner = name or address_principal(websocket)  # gateway.tenants
                runtime, _ = await manager.start(connection, principal=owner)
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
        SocketRoute("/ws", websocket_native),
        *api_routes(manager_of, store_of),
        *adapter_routes(settings),
        *ops_routes(settings, telemetry),
    ]
    if WEB_DIR.is_dir():
        routes.append(Mount("/", app=WebFiles(directory=WEB_DIR, html=True), name="web"))
    # Outermost first: request ids and edge metrics see every request, refused ones too;
    # then the host and origin gate; then CORS and OPTIONS.
    middleware = ops_middleware(settings, telemetry)
    middleware.insert(1, Middleware(BrowserGate, settings=settings))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        # One handler for both kinds of connection (it tells them apart).
        exception_handlers={StoreError: cast(ExceptionHandler, store_unavailable)},
    )
    app.state.telemetry = telemetry
    return app


#: The longest shutdown waits for the sweeper and the signal reader to end.
BACKGROUND_STOP_S = 5.0


def _background_died(task: asyncio.Task[Any], exc: BaseException) -> None:
    log.error("background task %s died", task.get_name(), exc_info=exc)


async def _check_at_start(llm: LLMProvider) -> None:
    """``GATEWAY_CHECK_PROVIDER``: refuse to start when the key or model is wrong."""
    try:
        result = await check_provider(llm)
    except CheckFailed as failed:
        await llm.aclose()
        log.error("provider check failed, not starting: %s", failed)
        raise
    log.info("provider check: %s", result.describe())


def store_policy(settings: Settings) -> StorePolicy:
    """How sessions write to the store: commits retried for ``GATEWAY_STORE_RETRY_S``,
    and ``updated_at`` sent at most every 5 s, or every tenth of the session TTL if
    that is shorter, so that the time a stopped session is expired by lags its TTL by
    a tenth at most."""
    return StorePolicy(
        retry_budget_s=settings.store_retry_s,
        touch_every_s=min(TOUCH_EVERY_S, settings.session_ttl_s / 10),
    )


def input_limits(settings: Settings) -> InputLimits:
    """What one client connection may send."""
    return InputLimits(
        rate_per_s=settings.rate_per_s,
        burst=settings.rate_burst,
        idle_timeout_s=settings.idle_timeout_s,
    )


async def store_unavailable(conn: Request | WebSocket, exc: Exception) -> Response | None:
    """A request or socket the store failed: an HTTP request gets 503 with the error
    JSON, never a bare 500; a WebSocket is closed 1011 as when a session cannot open
    (its client can resume once the store is back)."""
    if isinstance(conn, WebSocket):
        log.warning("session store failed on the WebSocket %s: %s", conn.url.path, exc)
        await close_quietly(conn, CloseCode.INTERNAL_ERROR, "session store unavailable")
        return None
    log.warning("session store failed during %s %s: %s", conn.method, conn.url.path, exc)
    return problem(503, "store_unavailable", "the session store is unavailable; try again")


def _denial(refused: AuthError) -> JSONResponse:
    return problem(
        refused.status,
        refused.code,
        refused.message,
        headers={"WWW-Authenticate": "Bearer"} if refused.status == 401 else None,
    )


async def drain(app: Starlette, settings: Settings) -> None:
    """Graceful shutdown of the sessions the app serves (before connections close)."""
    manager: SessionManager | None = getattr(app.state, "manager", None)
    if manager is not None:
        await manager.drain(settings.drain_s, reconnect_ms=settings.reconnect_delay_ms)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Server options that belong to the gateway's behaviour (used by the CLI and tests):
    the protocol classes of :mod:`gateway.transport` carry the connection limits."""
    http, ws = protocol_classes(
        TransportLimits(
            header_timeout_s=settings.header_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            max_sockets=socket_cap(settings.max_sockets, settings.fd_reserve),
            probe_slots=max(1, settings.fd_reserve // 2),
            max_in_bytes_per_s=settings.max_in_bytes_per_s,
        )
    )
    return {
        "http": http,
        "ws": ws,
        "ws_max_size": max(1 << 20, 2 * settings.max_frame_bytes),
        # permessage-deflate is off unless GATEWAY_WS_DEFLATE: text frames are small,
        # compression lets a client send many times the byte budget, and its zlib
        # state costs about 46 KiB per socket.
        "ws_per_message_deflate": settings.ws_deflate,
        "ws_ping_interval": settings.ping_interval_s,
        "ws_ping_timeout": settings.ping_timeout_s,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
    }
