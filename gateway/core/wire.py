"""The native JSON protocol v1: decode client frames, encode server events.

Client frames are parsed with a pydantic discriminated union on ``type``; unknown
fields are ignored so that newer clients keep working. A text frame that is not
JSON at all is taken as a ``user.message``, so typing into ``wscat`` works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from gateway.core.codes import ErrorCode
from gateway.core.events import (
    ClientEvent,
    FunctionResult,
    Interrupt,
    Ping,
    PlaybackAck,
    ResponseCreate,
    ServerEvent,
    SessionEnd,
    SessionResync,
    SessionUpdate,
    UserMessage,
)
from gateway.core.history import GenerationSettings, Message, ThinkingLevel, ToolSpec
from gateway.core.tools import MAX_TOOLS, ToolError, check_tool, unique

# Characters that can start a JSON document; any other first character is plain text.
_JSON_START = frozenset('{["-0123456789tfn')
_ID_MAX = 128


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _UserMessage(_Model):
    type: Literal["user.message"]
    text: StrictStr
    id: Annotated[StrictStr, Field(min_length=1, max_length=_ID_MAX)] | None = None


class _Interrupt(_Model):
    type: Literal["interrupt"]
    turn_id: StrictStr | None = None
    heard_text: StrictStr | None = None


class _PlaybackAck(_Model):
    type: Literal["playback.ack"]
    turn_id: StrictStr
    index: Annotated[StrictInt, Field(ge=0)]


class _ResponseCreate(_Model):
    type: Literal["response.create"]
    instructions: StrictStr | None = None


class _SessionUpdate(_Model):
    type: Literal["session.update"]
    instructions: StrictStr | None = None
    language: Annotated[StrictStr, Field(max_length=35)] | None = None
    temperature: Annotated[StrictFloat | StrictInt, Field(ge=0, le=2)] | None = None
    max_output_tokens: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    thinking_level: ThinkingLevel | None = None
    thinking_budget: Annotated[StrictInt, Field(ge=-1, le=1_000_000)] | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOLS)] | None = None
    variables: (
        Annotated[
            dict[
                Annotated[StrictStr, Field(max_length=64)],
                Annotated[StrictStr, Field(max_length=1000)] | StrictInt | StrictFloat,
            ],
            Field(max_length=64),
        ]
        | None
    ) = None

    def generation(self) -> GenerationSettings | None:
        settings = GenerationSettings(
            temperature=None if self.temperature is None else float(self.temperature),
            max_output_tokens=self.max_output_tokens,
            thinking_level=self.thinking_level,
            thinking_budget=self.thinking_budget,
        )
        return None if settings == GenerationSettings() else settings


class _FunctionResult(_Model):
    type: Literal["function.result"]
    call_id: Annotated[StrictStr, Field(min_length=1, max_length=_ID_MAX)]
    output: Any = None


class _Ping(_Model):
    type: Literal["ping"]
    id: Annotated[StrictStr, Field(max_length=_ID_MAX)] | StrictInt | None = None


class _SessionEnd(_Model):
    type: Literal["session.end"]


_ClientFrame = Annotated[
    _UserMessage
    | _Interrupt
    | _PlaybackAck
    | _ResponseCreate
    | _SessionUpdate
    | _Ping
    | _SessionEnd
    | _FunctionResult,
    Field(discriminator="type"),
]
_CLIENT_FRAME: TypeAdapter[_ClientFrame] = TypeAdapter(_ClientFrame)

CLIENT_TYPES = (
    "user.message",
    "interrupt",
    "playback.ack",
    "response.create",
    "session.update",
    "ping",
    "session.end",
    "function.result",
)


@dataclass(frozen=True, slots=True)
class WireError:
    """A frame that could not be turned into an event, and why."""

    code: ErrorCode
    message: str


def _tools(declared: list[dict[str, Any]]) -> tuple[ToolSpec, ...]:
    """``session.update`` ``tools``: each checked (:class:`ToolError` names the bad one)."""
    return unique(
        (
            check_tool(
                tool.get("name"),
                tool.get("description"),
                tool.get("parameters"),
                where=f"tools[{index}]",
            )
            for index, tool in enumerate(declared)
        ),
        where="session.update tools",
    )


def _to_event(frame: _ClientFrame) -> ClientEvent:
    match frame:
        case _UserMessage():
            return UserMessage(text=frame.text, id=frame.id)
        case _Interrupt():
            return Interrupt(turn_id=frame.turn_id, heard_text=frame.heard_text)
        case _PlaybackAck():
            return PlaybackAck(turn_id=frame.turn_id, index=frame.index)
        case _ResponseCreate():
            return ResponseCreate(instructions=frame.instructions)
        case _SessionUpdate():
            return SessionUpdate(
                instructions=frame.instructions,
                language=frame.language,
                generation=frame.generation(),
                tools=None if frame.tools is None else _tools(frame.tools),
                variables=None
                if frame.variables is None
                else tuple(sorted((k, str(v)) for k, v in frame.variables.items())),
            )
        case _FunctionResult():
            return FunctionResult(call_id=frame.call_id, output=orjson.dumps(frame.output).decode())
        case _Ping():
            return Ping(id=frame.id)
        case _SessionEnd():
            return SessionEnd()


def _describe(exc: ValidationError) -> WireError:
    err = exc.errors(include_url=False, include_input=False)[0]
    kind = err["type"]
    if kind == "union_tag_invalid":
        return WireError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown event type; expected one of: {', '.join(CLIENT_TYPES)}",
        )
    loc = err["loc"]  # (event type, field, [union member]) for a tagged union
    field = str(loc[1]) if len(loc) > 1 else str(loc[0])
    if kind == "missing":
        return WireError(ErrorCode.INVALID_FIELD, f"field '{field}' is required")
    return WireError(ErrorCode.INVALID_FIELD, f"field '{field}' is invalid: {err['msg']}")


def decode(frame: str | bytes, *, max_bytes: int) -> ClientEvent | WireError:
    """Turn one WebSocket frame into a client event, or say what is wrong with it."""
    if isinstance(frame, bytes):
        return WireError(ErrorCode.BINARY_FRAME, "binary frames are not supported; send JSON text")
    if len(frame) > max_bytes or (len(frame) * 4 > max_bytes and len(frame.encode()) > max_bytes):
        return WireError(ErrorCode.FRAME_TOO_LARGE, f"the frame is larger than {max_bytes} bytes")
    head = frame.lstrip()[:1]
    if head not in _JSON_START:
        return UserMessage(text=frame)
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError:
        if head in "{[":
            return WireError(
                ErrorCode.INVALID_JSON, "the frame starts like JSON but is not valid JSON"
            )
        return UserMessage(text=frame)  # plain text such as "3 apples" or "no thanks"
    if not isinstance(data, dict):
        return WireError(ErrorCode.NOT_AN_OBJECT, "the frame must be a JSON object")
    if not isinstance(data.get("type"), str):
        if "type" not in data:
            return WireError(ErrorCode.MISSING_TYPE, "the event has no 'type' field")
        return WireError(ErrorCode.MISSING_TYPE, "the event 'type' must be a string")
    try:
        return _to_event(_CLIENT_FRAME.validate_python(data))
    except ValidationError as exc:
        return _describe(exc)
    except ToolError as exc:
        return WireError(ErrorCode.INVALID_TOOL, str(exc))


def encode(event: ServerEvent) -> str:
    """Serialize a server event as one JSON text frame.

    A ``session.resync`` transcript lists ``{role, text}``, with ``calls`` on a
    message that called functions and ``call_id``/``name`` on a function result.
    """
    if isinstance(event, SessionResync):
        data = {
            "type": event.type,
            "session_id": event.session_id,
            "seq": event.seq,
            "transcript": [_entry(m) for m in event.transcript],
            "streaming_turn_id": event.streaming_turn_id,
        }
        return orjson.dumps(data).decode()
    return orjson.dumps(event).decode()


def _entry(message: Message) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": message.role, "text": message.text}
    if message.calls:
        entry["calls"] = [
            {"call_id": c.call_id, "name": c.name, "arguments": orjson.loads(c.arguments)}
            for c in message.calls
        ]
    if message.call_id is not None:
        entry["call_id"], entry["name"] = message.call_id, message.name
    return entry
