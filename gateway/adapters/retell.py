"""Retell custom LLM on ``WS /retell/{call_id}``.

Retell does speech, turn-taking and barge-in; it asks for a reply by
``response_id`` and always sends the full transcript, which is the source of
truth for history. The mapping (see docs/adapters/retell.md):

- on connect: ``config`` (auto reconnect, call details) and the begin response
  ``response_id: 0`` carrying ``RETELL_WELCOME`` (empty on a reconnect);
- ``ping_pong`` is echoed; ``call_details`` becomes template variables
  (``{{name}}`` in the instructions: the call's string fields, ``metadata.*`` and
  ``retell_llm_dynamic_variables.*``, also by their bare names);
- ``update_only`` replaces the history with the transcript (no turn);
- ``response_required`` / ``reminder_required`` replace the history and start a
  turn for that ``response_id``, superseding an older one (reminders get
  instructions to re-engage the user; a reminder without a transcript keeps the
  stored history); a stale ``response_id`` (not newer than
  one already taken, even before a reconnect) is ignored by the core;
- chunks go out as ``response`` frames of the turn's ``response_id``, then
  ``content_complete: true``. Only the newest ``response_id`` is ever spoken: once
  a newer one is requested, nothing of an older one is sent, not even its
  ``content_complete`` (Retell ignores stale ids anyway);
- ``session.ended`` becomes a response with ``end_call: true``;
- call control rides on the turn's ``content_complete`` frame, which Retell
  carries out once the content is spoken (so the goodbye is never cut off):
  ``end_call`` -> ``end_call: true``, ``transfer_call`` -> ``transfer_number``,
  ``send_digits`` -> ``digit_to_press``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute
from starlette.websockets import WebSocket

from gateway.adapters import retell_wire as rw
from gateway.adapters.wsbase import POLICY_VIOLATION, parse_frame, serve_keyed
from gateway.connection import Reply
from gateway.core.events import (
    ClientEvent,
    Error,
    ResponseCallControl,
    ResponseEnd,
    ResponseStart,
    ResponseTts,
    ServerEvent,
    SessionEnded,
    SessionUpdate,
    SetHistory,
    TranscriptTurn,
)
from gateway.core.history import Message
from gateway.core.replay import LoggedEvent
from gateway.core.wire import WireError
from gateway.runtime import SessionRuntime
from gateway.settings import Settings
from gateway.wsroute import SocketRoute

log = logging.getLogger("gateway.adapters.retell")

PLATFORM = "retell"
#: Added to the system instructions for a ``reminder_required`` turn.
REMINDER_INSTRUCTIONS = (
    "The user has been silent for a while; say something short to re-engage them."
)
_CALL_ID_MAX = 256
_KEYS_LOGGED = 20


class RetellCodec:
    """Retell LLM WebSocket frames <-> session events, for one connection of a call."""

    def __init__(
        self,
        *,
        max_frame_bytes: int,
        welcome: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max = max_frame_bytes
        self._welcome = welcome
        self._clock = clock
        self._latest: int | None = None
        self._response_of: dict[str, int] = {}
        #: Call control asked for by a turn, carried out at its ``content_complete``.
        self._controls: dict[str, list[ResponseCallControl]] = {}
        self._transcript: tuple[Message, ...] | None = None
        #: The ``call`` object of ``call_details`` (ids, numbers, metadata).
        self.call_details: dict[str, Any] = {}

    def opening(self, *, first: bool) -> list[str]:
        """``config``, then the begin response (the welcome on a call's first connection)."""
        welcome = self._welcome if first else ""
        return [rw.config_frame(), rw.response_frame(0, welcome, complete=True)]

    def decode(self, frame: str | bytes) -> ClientEvent | WireError | Reply | None:
        parsed = parse_frame(
            rw.INBOUND, frame, max_bytes=self._max, platform=PLATFORM, tag="interaction_type"
        )
        match parsed:
            case rw.PingPong():
                return Reply(rw.ping_pong_frame(parsed.timestamp))
            case rw.CallDetails():
                self.call_details = parsed.call
                metadata = parsed.call.get("metadata")
                log.info(
                    "%s: call details keys=%s metadata keys=%s",
                    PLATFORM,
                    sorted(parsed.call)[:_KEYS_LOGGED],
                    sorted(metadata)[:_KEYS_LOGGED] if isinstance(metadata, dict) else [],
                )
                return SessionUpdate(variables=call_variables(parsed.call))
            case rw.UpdateOnly():
                transcript = parsed.messages()
                if transcript != self._transcript:
                    self._transcript = transcript
                    return SetHistory(transcript)
            case rw.ResponseRequired() | rw.ReminderRequired():
                # Stale ids are the core's to drop (``ordinal``); the codec only
                # keeps the newest so that nothing of an older response is sent.
                response_id = parsed.response_id
                self._latest = (
                    response_id if self._latest is None else max(self._latest, response_id)
                )
                self._transcript = parsed.messages()
                reminder = isinstance(parsed, rw.ReminderRequired)
                return TranscriptTurn(
                    self._transcript,
                    reply_to=str(response_id),
                    instructions=REMINDER_INSTRUCTIONS if reminder else None,
                    ordinal=response_id,
                    keep_history=reminder,
                )
        return None

    def encode(self, frame: LoggedEvent, event: ServerEvent | None) -> str | None:
        match event:
            case ResponseStart(in_reply_to=str(reply_to)) if reply_to.isdigit():
                self._response_of[event.turn_id] = int(reply_to)
            case ResponseTts():
                response_id = self._response_of.get(event.turn_id)
                if response_id is not None and response_id == self._latest:
                    return rw.response_frame(response_id, event.text + " ", complete=False)
            case ResponseCallControl():
                self._controls.setdefault(event.turn_id, []).append(event)
            case ResponseEnd():
                response_id = self._response_of.pop(event.turn_id, None)
                controls = self._controls.pop(event.turn_id, [])
                if response_id is not None and response_id == self._latest:
                    if event.status != "completed":
                        controls = []
                    actions = {c.action: c for c in controls}
                    transfer = actions.get("transfer_call")
                    digits = actions.get("send_digits")
                    return rw.response_frame(
                        response_id,
                        "",
                        complete=True,
                        end_call="end_call" in actions,
                        transfer_number=transfer.to if transfer is not None else None,
                        digit_to_press=digits.digits if digits is not None else None,
                    )
            case SessionEnded():
                return rw.response_frame(self._latest or 0, "", complete=True, end_call=True)
            case Error():
                log.debug("%s: session error code=%s not sent", PLATFORM, event.code)
        return None

    def heartbeat(self, session_id: str, seq: int) -> str | None:
        return rw.ping_pong_frame(round(self._clock() * 1000))


def call_variables(call: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Template variables from Retell's ``call`` object: its scalar fields by name,
    ``metadata`` and ``retell_llm_dynamic_variables`` entries both as
    ``metadata.key`` and as ``key`` (the call's own fields win)."""
    out: dict[str, str] = {}
    for group in ("retell_llm_dynamic_variables", "metadata"):
        nested = call.get(group)
        if isinstance(nested, dict):
            for key, value in nested.items():
                if isinstance(value, str | int | float | bool):
                    out[f"{group}.{key}"] = str(value)
                    out.setdefault(str(key), str(value))
    for key, value in call.items():
        if isinstance(value, str | int | float | bool):
            out[str(key)] = str(value)
    return tuple(sorted(out.items()))


def _first_connection(runtime: SessionRuntime) -> bool:
    """Whether this is the call's first connection (so the welcome is spoken)."""
    session = runtime.session
    return not runtime.attached and session.seq == 0 and not session.history


def routes(settings: Settings) -> list[BaseRoute]:
    """``WS /retell/{call_id}``, or ``WS /retell/{secret}/{call_id}`` when
    ``RETELL_SECRET`` is set (Retell signs nothing on this socket and appends the
    call id to the URL you give it, so a secret path segment is the credential)."""
    secret = settings.retell_secret.get_secret_value() if settings.retell_secret else None

    async def endpoint(websocket: WebSocket) -> None:
        call_id: str = websocket.path_params["call_id"]
        given: str | None = websocket.path_params.get("secret")
        if secret is not None and (
            given is None or not hmac.compare_digest(given.encode(), secret.encode())
        ):
            log.warning("%s: connection without the right path secret refused", PLATFORM)
            await websocket.close(POLICY_VIOLATION)  # before accept: HTTP 403
            return
        if len(call_id) > _CALL_ID_MAX:
            await websocket.close(POLICY_VIOLATION)
            return
        await websocket.accept()
        codec = RetellCodec(
            max_frame_bytes=settings.max_frame_bytes, welcome=settings.retell_welcome
        )

        def opening(runtime: SessionRuntime) -> Sequence[str]:
            return codec.opening(first=_first_connection(runtime))

        await serve_keyed(
            websocket,
            codec,
            kind=PLATFORM,
            key=call_id,
            settings=settings,
            opening=opening,
            chunk_mode=settings.retell_chunking,
        )

    return [
        SocketRoute("/retell/{call_id}", endpoint),
        SocketRoute("/retell/{secret}/{call_id}", endpoint),
    ]
