"""Retell custom-LLM WebSocket frames, as pydantic models.

Inbound frames form a discriminated union on ``interaction_type``; unknown fields
are ignored. Outbound frames are built by the small functions at the end.
"""

from __future__ import annotations

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
)

from gateway.core.history import Message, Role

_ROLES: dict[str, Role] = {"agent": "assistant", "user": "user"}
#: Retell counts ``response_id`` up from 0 by one per request; a larger id is not
#: Retell's, and one near 2**64 would make every later id look stale for good.
MAX_RESPONSE_ID = 2**31 - 1
#: ``ping_pong`` timestamps are Unix milliseconds; they are echoed, so they must
#: stay within what JSON numbers carry exactly.
MAX_TIMESTAMP = 2**53


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Utterance(_Frame):
    """One transcript entry; roles other than ``agent``/``user`` (``system``, tool
    call records) are skipped when mapped."""

    role: StrictStr
    content: StrictStr = ""


class _WithTranscript(_Frame):
    transcript: list[Utterance] = Field(default_factory=list)

    def messages(self) -> tuple[Message, ...]:
        """The transcript as history: agent -> assistant, user -> user, empty skipped."""
        return tuple(
            Message(_ROLES[u.role], u.content.strip())
            for u in self.transcript
            if u.role in _ROLES and u.content.strip()
        )


class PingPong(_Frame):
    interaction_type: Literal["ping_pong"]
    timestamp: Annotated[
        StrictInt | StrictFloat, Field(ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False)
    ]


class CallDetails(_Frame):
    interaction_type: Literal["call_details"]
    call: dict[str, Any] = Field(default_factory=dict)


class UpdateOnly(_WithTranscript):
    interaction_type: Literal["update_only"]


class ResponseRequired(_WithTranscript):
    interaction_type: Literal["response_required"]
    response_id: Annotated[StrictInt, Field(ge=0, le=MAX_RESPONSE_ID)]


class ReminderRequired(_WithTranscript):
    interaction_type: Literal["reminder_required"]
    response_id: Annotated[StrictInt, Field(ge=0, le=MAX_RESPONSE_ID)]


InboundFrame = Annotated[
    PingPong | CallDetails | UpdateOnly | ResponseRequired | ReminderRequired,
    Field(discriminator="interaction_type"),
]
INBOUND: TypeAdapter[InboundFrame] = TypeAdapter(InboundFrame)


def _dumps(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def config_frame() -> str:
    """Asks Retell to reconnect on its own and to send ``call_details``."""
    return _dumps(
        {"response_type": "config", "config": {"auto_reconnect": True, "call_details": True}}
    )


def ping_pong_frame(timestamp: int | float) -> str:
    return _dumps({"response_type": "ping_pong", "timestamp": timestamp})


def response_frame(
    response_id: int,
    content: str,
    *,
    complete: bool,
    end_call: bool = False,
    transfer_number: str | None = None,
    digit_to_press: str | None = None,
) -> str:
    """A ``response`` frame: content for ``response_id``, possibly its last; Retell
    hangs up (``end_call``) or transfers (``transfer_number``) once the content is
    spoken, and presses ``digit_to_press``."""
    frame: dict[str, Any] = {
        "response_type": "response",
        "response_id": response_id,
        "content": content,
        "content_complete": complete,
        "end_call": end_call,
    }
    if transfer_number is not None:
        frame["transfer_number"] = transfer_number
    if digit_to_press is not None:
        frame["digit_to_press"] = digit_to_press
    return _dumps(frame)
