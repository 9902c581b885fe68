"""The one path every WebSocket route serves its sockets by (``/ws`` and the platforms).

After the route accepted the socket and chose its codec, :func:`serve_socket`
counts it against ``GATEWAY_MAX_CONNECTIONS`` (every route counts), opens and
attaches the session through the route's ``opener``, runs the
:class:`~gateway.connection.Connection`, and always releases the slot. Refusals
become their documented close codes; an unexpected exception is logged once
and closes this socket 1011, and goes no further.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.connection import Codec, Connection, InputLimits, SessionPort
from gateway.core.codes import CloseCode
from gateway.errors import ResumeRefused, StoreError, TooManySessions
from gateway.guard import Guard
from gateway.logformat import bind_session
from gateway.settings import Settings

log = logging.getLogger("gateway.connection")

#: Opens the session and attaches the connection to it; ``None`` when there is
#: nothing to serve (the opener closed the socket itself).
Opener = Callable[[Connection], Awaitable[SessionPort | None]]


async def close_quietly(websocket: WebSocket, code: int, reason: str = "") -> None:
    """Close ``websocket``; a peer that is already gone is not an error."""
    try:
        await websocket.close(code, reason)
    except (WebSocketDisconnect, RuntimeError, OSError):
        log.debug("socket was gone before the close frame")


async def serve_socket(
    websocket: WebSocket,
    codec: Codec,
    opener: Opener,
    *,
    settings: Settings,
    route: str,
    limits: InputLimits,
    principal: str | None = None,
) -> None:
    """Serve one accepted WebSocket until it closes."""
    guard: Guard = websocket.app.state.guard
    busy = guard.connections.acquire(principal)
    if busy is not None:
        log.info("%s: connection refused: %s", route, busy)
        await close_quietly(websocket, CloseCode.TRY_AGAIN_LATER, busy)
        return
    try:
        connection = Connection(
            websocket,
            codec,
            queue_size=settings.send_queue_size,
            heartbeat_s=settings.heartbeat_s,
            limits=limits,
            metrics=websocket.app.state.telemetry.metrics,
        )
        try:
            runtime = await opener(connection)
        except ResumeRefused as refused:
            log.info("%s: session refused code=%s", route, refused.code)
            await close_quietly(websocket, refused.code, refused.reason)
            return
        except TooManySessions as exc:
            await close_quietly(websocket, CloseCode.TOO_MANY_SESSIONS, str(exc))
            return
        except StoreError:
            log.exception("%s: session store failed while opening a session", route)
            await close_quietly(websocket, CloseCode.INTERNAL_ERROR, "session store unavailable")
            return
        if runtime is None:
            return
        session_id = runtime.session.id
        bind_session(session_id)
        log.info("%s: connection open session=%s", route, session_id)
        try:
            await connection.serve(runtime)
        except Exception:
            log.exception("%s: connection failed session=%s", route, session_id)
            await close_quietly(websocket, CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            log.info(
                "%s: connection closed session=%s code=%s",
                route,
                session_id,
                connection.close_code,
            )
    finally:
        guard.connections.release(principal)
