"""What the WebSocket platform adapters share: frame parsing and the keyed-session endpoint.

A platform (Twilio, Retell) dials the gateway and names the call with its own id;
the adapter turns that id into a stable session (``SessionManager.open_keyed``) and
runs a :class:`~gateway.connection.Connection` with the platform's codec on it.
Platforms have no resume protocol of their own, so no replay is asked for: a
reconnecting platform simply gets the same session (history and all) again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocket

from gateway.connection import Codec, Connection, InputLimits
from gateway.core.chunker import ChunkMode
from gateway.core.codes import CloseCode
from gateway.deps import manager_of
from gateway.runtime import SessionRuntime
from gateway.serving import serve_socket
from gateway.settings import Settings

log = logging.getLogger("gateway.adapters")

#: WebSocket close code for a peer that broke the protocol (and, before accept, HTTP 403).
POLICY_VIOLATION = CloseCode.POLICY_VIOLATION

_TAG_SHOWN = 40

T = TypeVar("T")


def too_large(frame: str, max_bytes: int) -> bool:
    """Whether ``frame`` is over ``max_bytes`` once UTF-8 encoded (cheap when it is small)."""
    return len(frame) > max_bytes or (
        len(frame) * 4 > max_bytes and len(frame.encode()) > max_bytes
    )


def parse_frame(
    adapter: TypeAdapter[T], frame: str | bytes, *, max_bytes: int, platform: str, tag: str
) -> T | None:
    """One platform frame as its wire model, or ``None`` when it cannot be used.

    ``adapter`` validates a discriminated union on the ``tag`` field. A frame that
    is binary, too large, not JSON, not an object or not valid for its type is
    logged (never its content: it may hold what the caller said) and dropped; an
    unknown type is logged and dropped too. Nothing is answered: the platforms
    have no message for "your frame was bad", and the call goes on.
    """
    if isinstance(frame, bytes):
        log.warning("%s: binary frame of %d bytes dropped", platform, len(frame))
        return None
    if too_large(frame, max_bytes):
        log.warning("%s: frame larger than %d bytes dropped", platform, max_bytes)
        return None
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError:
        log.warning("%s: frame that is not JSON dropped (%d chars)", platform, len(frame))
        return None
    if not isinstance(data, dict):
        log.warning("%s: frame that is not a JSON object dropped", platform)
        return None
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        if err["type"] == "union_tag_invalid":
            shown = str(data.get(tag))[:_TAG_SHOWN]
            log.info("%s: unknown %s %r ignored", platform, tag, shown)
        elif err["type"] == "union_tag_not_found":
            log.warning("%s: frame without a string '%s' dropped", platform, tag)
        else:
            where = ".".join(str(part) for part in err["loc"])
            log.warning("%s: invalid frame dropped: %s: %s", platform, where, err["msg"])
        return None


def _no_opening(runtime: SessionRuntime) -> Sequence[str]:
    return ()


def platform_limits(settings: Settings) -> InputLimits:
    """What a platform connection may send.

    Platforms are signed peers that may stream partial prompts and playback events
    quickly: a dropped prompt would break the call, so their rate limit is looser
    than a browser's. The idle timeout is the same as ``/ws``'s.
    """
    return InputLimits(
        rate_per_s=max(settings.rate_per_s, 50),
        burst=max(settings.rate_burst, 200),
        idle_timeout_s=settings.idle_timeout_s,
    )


async def serve_keyed(
    websocket: WebSocket,
    codec: Codec,
    *,
    kind: str,
    key: str | Callable[[], Awaitable[str | None]],
    settings: Settings,
    opening: Callable[[SessionRuntime], Sequence[str]] = _no_opening,
    chunk_mode: ChunkMode | None = None,
) -> None:
    """Serve an accepted WebSocket on the session the platform calls ``key``.

    ``key`` may be a coroutine function that reads it off the socket first
    (Twilio's ``setup``; ``None``: the peer left or never said). ``opening(runtime)``
    gives the frames the platform expects first (Retell's config and begin
    message); they are sent before any session event. ``chunk_mode`` is how the
    route's replies are cut (default: the session's).
    """
    manager = manager_of(websocket)

    async def opener(connection: Connection) -> SessionRuntime | None:
        name = key if isinstance(key, str) else await key()
        if name is None:
            return None

        def before(runtime: SessionRuntime) -> None:
            if chunk_mode is not None:
                runtime.session.use_chunk_mode(chunk_mode)
            connection.prepend(opening(runtime))

        return await manager.attach_keyed(kind, name, connection, before=before)

    await serve_socket(
        websocket, codec, opener, settings=settings, route=kind, limits=platform_limits(settings)
    )
