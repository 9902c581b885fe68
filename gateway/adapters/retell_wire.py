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
    timestamp: StrictInt | StrictFloat


class CallDetails(_Frame):
    interaction_type: Literal["call_details"]
    call: dict[str, Any] = Field(default_factory=dict)


class UpdateOnly(_WithTranscript):
    interaction_type: Literal["update_only"]


class ResponseRequired(_WithTranscript):
    interaction_type: Literal["response_required"]
    response_id: Annotated[StrictInt, Field(ge=0)]


class ReminderRequired(_WithTranscript):
    interaction_type: Literal["reminder_required"]
    response_id: Annotated[StrictInt, Field(ge=0)]


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
