"""Events in (from any client protocol) and events out (the native protocol v1).

Inbound events are what adapters decode frames into; outbound events are what the
session core emits. Outbound events carry ``type``, ``session_id`` and ``seq`` as
fields, so the native wire format is simply ``orjson.dumps(event)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gateway.core.history import GenerationSettings, Message, ToolSpec, Usage

PROTOCOL_VERSION = 1

TurnStatus = Literal["completed", "interrupted", "superseded", "failed"]


# --- inbound ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserMessage:
    """The user said (or typed) something: starts a turn."""

    text: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Stop the streaming turn; ``heard_text`` is what the user actually heard."""

    turn_id: str | None = None
    heard_text: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseCreate:
    """Make the assistant speak without a user message (a greeting, a nudge)."""

    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """Change the session's system instructions, language and/or generation
    settings (``generation`` fields that are ``None`` stay as they are)."""

    instructions: str | None = None
    language: str | None = None
    generation: GenerationSettings | None = None
    #: The client's own functions (replacing those it declared before); ``None``:
    #: unchanged.
    tools: tuple[ToolSpec, ...] | None = None
    #: Template variables: ``{{name}}`` in the instructions becomes the value
    #: (Retell ``call_details``, Twilio ``customParameters``); replaces earlier ones.
    variables: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class Greeted:
    """The platform spoke a greeting of its own (Twilio ``welcomeGreeting``): what
    the caller heard of it enters history as the assistant's first words, if the
    conversation has not begun."""

    text: str


@dataclass(frozen=True, slots=True)
class FunctionResult:
    """The client ran the function call ``call_id``: ``output`` is its result as JSON."""

    call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Application-level ping; answered by :class:`Pong` with the same id."""

    id: str | int | None = None


@dataclass(frozen=True, slots=True)
class PlaybackAck:
    """Chunk ``index`` of ``turn_id`` finished playing: the user heard it."""

    turn_id: str
    index: int


@dataclass(frozen=True, slots=True)
class SetHistory:
    """The platform keeps the transcript: make it the session's history (no turn)."""

    transcript: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class TranscriptTurn:
    """The platform keeps the transcript: replace the history with ``transcript`` and
    answer it in a new turn (superseding a streaming one). ``reply_to`` is the
    platform's id for this response, reported as ``in_reply_to``. ``ordinal``
    orders requests (Retell's increasing ``response_id``): one not newer than the
    newest already taken is stale and ignored, even across reconnects."""

    transcript: tuple[Message, ...]
    reply_to: str | None = None
    instructions: str | None = None
    ordinal: int | None = None
    #: The caller's own functions for this turn (OpenAI ``tools``): a call to one
    #: is sent as ``response.function_call`` and *ends* the turn (reason
    #: ``function_call``), since the result comes with the next request.
    tools: tuple[ToolSpec, ...] | None = None
    #: OpenAI ``tool_choice``: ``auto``, ``none``, ``required`` or a function name.
    tool_choice: str | None = None
    #: An empty ``transcript`` keeps the stored history (Retell's reminder without one).
    keep_history: bool = False


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """The client is done: end the streaming turn and close cleanly."""


ClientEvent = (
    UserMessage
    | Interrupt
    | PlaybackAck
    | ResponseCreate
    | SessionUpdate
    | Ping
    | SessionEnd
    | SetHistory
    | TranscriptTurn
    | FunctionResult
    | Greeted
)


# --- outbound --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds from the start of a turn; ``None`` when it never happened."""

    first_token_ms: int | None
    first_chunk_ms: int | None
    total_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionReady:
    type: Literal["session.ready"] = "session.ready"
    session_id: str
    seq: int
    resume_token: str
    protocol: int = PROTOCOL_VERSION
    provider: str
    model: str
    language: str
    resumed: bool = False


#: Server events that describe the connection, not the conversation: they do not
#: advance ``seq`` and are never logged or replayed.
CONNECTION_EVENTS = frozenset(
    {"session.ready", "session.resync", "session.reconnect", "heartbeat", "pong"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionResync:
    """A resuming client asked for events the log no longer holds: here is the
    transcript instead. A connection event: ``seq`` is where the session stands."""

    type: Literal["session.resync"] = "session.resync"
    session_id: str
    seq: int
    transcript: tuple[Message, ...]
    streaming_turn_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """Keeps idle connections alive through proxies. A connection event: ``seq``
    is the last ``seq`` sent on this connection."""

    type: Literal["heartbeat"] = "heartbeat"
    session_id: str
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionReconnect:
    """The gateway is going away: finish the current turn, then expect the socket
    to close and resume after ``delay_ms``. A connection event."""

    type: Literal["session.reconnect"] = "session.reconnect"
    session_id: str
    seq: int
    delay_ms: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionUpdated:
    type: Literal["session.updated"] = "session.updated"
    session_id: str
    seq: int
    language: str
    instructions: str | None
    generation: GenerationSettings = GenerationSettings()
    #: The names of the functions the client declared.
    tools: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded:
    type: Literal["session.ended"] = "session.ended"
    session_id: str
    seq: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseStart:
    type: Literal["response.start"] = "response.start"
    session_id: str
    seq: int
    turn_id: str
    in_reply_to: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseTts:
    type: Literal["response.tts"] = "response.tts"
    session_id: str
    seq: int
    turn_id: str
    index: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseEnd:
    type: Literal["response.end"] = "response.end"
    session_id: str
    seq: int
    turn_id: str
    status: TurnStatus
    text: str
    spoken_text: str | None
    reason: str | None
    latency: Latency
    #: The provider's token counts for this turn, when it gave them.
    usage: Usage | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseFunctionCall:
    """The model called a client function: answer with ``function.result``; the turn
    stays open (no ``response.end``) until every call of it is answered."""

    type: Literal["response.function_call"] = "response.function_call"
    session_id: str
    seq: int
    turn_id: str
    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseFunctionResult:
    """A server tool (``GATEWAY_TOOLS_FILE``) answered a call of the turn; the
    model goes on with it. Informational: nothing to answer."""

    type: Literal["response.function_result"] = "response.function_result"
    session_id: str
    seq: int
    turn_id: str
    call_id: str
    name: str
    output: Any


CallAction = Literal["end_call", "transfer_call", "send_digits"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseCallControl:
    """The model asked for call control (a built-in tool). Carry out ``end_call``
    and ``transfer_call`` once the turn's ``response.end`` arrived and its text was
    spoken; ``send_digits`` at once. ``to`` is the transfer target, ``digits`` the
    keys, ``reason`` the model's reason for hanging up, if it gave one."""

    type: Literal["response.call_control"] = "response.call_control"
    session_id: str
    seq: int
    turn_id: str
    call_id: str
    action: CallAction
    to: str | None = None
    digits: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryTruncated:
    """An already ended turn was cut to what the user heard."""

    type: Literal["history.truncated"] = "history.truncated"
    session_id: str
    seq: int
    turn_id: str
    spoken_text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UserDuplicate:
    """A ``user.message`` repeated an ``id`` already answered: no new turn."""

    type: Literal["user.duplicate"] = "user.duplicate"
    session_id: str
    seq: int
    id: str
    turn_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong:
    type: Literal["pong"] = "pong"
    session_id: str
    seq: int
    id: str | int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    type: Literal["error"] = "error"
    session_id: str
    seq: int
    code: str
    message: str
    fatal: bool = False
    turn_id: str | None = None
    retryable: bool | None = None
    detail: str | None = None


ServerEvent = (
    SessionReady
    | SessionResync
    | Heartbeat
    | SessionReconnect
    | SessionUpdated
    | SessionEnded
    | ResponseStart
    | ResponseTts
    | ResponseEnd
    | ResponseFunctionCall
    | ResponseFunctionResult
    | ResponseCallControl
    | HistoryTruncated
    | UserDuplicate
    | Pong
    | Error
)
