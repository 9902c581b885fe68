"""Twilio ConversationRelay (and Telnyx Conversation Relay) frames, as pydantic models.

Inbound frames form a discriminated union on ``type``; unknown fields are ignored.
Field names are the platform's own (camelCase). Outbound frames are built by the
small functions at the end.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    model_validator,
)

_CALL_ID_MAX = 256
_CallId = Annotated[StrictStr, Field(min_length=1, max_length=_CALL_ID_MAX)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Setup(_Frame):
    """First frame of a relay session. Twilio names the call ``callSid``; Telnyx also
    sends ``callControlId`` and ``callSessionId``."""

    type: Literal["setup"]
    callSid: _CallId | None = None
    callControlId: _CallId | None = None
    callSessionId: _CallId | None = None
    sessionId: _CallId | None = None
    customParameters: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _has_a_call_id(self) -> Setup:
        if self.call_key is None:
            raise ValueError("setup names no call (callSid, callControlId or callSessionId)")
        return self

    @property
    def call_key(self) -> str | None:
        """The platform's id of the call: what the session is keyed by."""
        return self.callSid or self.callControlId or self.callSessionId or self.sessionId


class Prompt(_Frame):
    """What the caller said; ``last: false`` is a partial (``partialPrompts``)."""

    type: Literal["prompt"]
    voicePrompt: StrictStr
    lang: StrictStr | None = None
    last: StrictBool = True


class Interrupt(_Frame):
    """The caller spoke over the agent; ``utteranceUntilInterrupt`` is what was played."""

    type: Literal["interrupt"]
    utteranceUntilInterrupt: StrictStr | None = None
    durationUntilInterruptMs: StrictInt | StrictFloat | StrictStr | None = None

    @property
    def duration_ms(self) -> int | None:
        """The duration as a number (Twilio sends it as a string or a number)."""
        value = self.durationUntilInterruptMs
        if isinstance(value, str):
            try:
                return round(float(value))
            except ValueError:
                return None
        return None if value is None else round(value)


class Dtmf(_Frame):
    """The caller pressed a key (``dtmfDetection``)."""

    type: Literal["dtmf"]
    digit: Annotated[StrictStr, Field(min_length=1, max_length=8)] | StrictInt


class Info(_Frame):
    """Debug and telemetry (``debug``/``events`` attributes); loosely documented."""

    type: Literal["info"]
    name: Any = None


class PlatformError(_Frame):
    """The platform reports an error, e.g. a frame of ours it could not use."""

    type: Literal["error"]
    description: StrictStr | None = None


InboundFrame = Annotated[
    Setup | Prompt | Interrupt | Dtmf | Info | PlatformError, Field(discriminator="type")
]
INBOUND: TypeAdapter[InboundFrame] = TypeAdapter(InboundFrame)


def text_frame(
    token: str,
    *,
    last: bool,
    interruptible: bool | None = None,
    preemptible: bool | None = None,
) -> str:
    """A ``text`` frame: tokens to speak; ``last: true`` closes the talk cycle.
    ``interruptible`` (the caller may barge in) and ``preemptible`` (later tokens
    may replace these) are sent only when set."""
    frame: dict[str, Any] = {"type": "text", "token": token, "last": last}
    if interruptible is not None:
        frame["interruptible"] = interruptible
    if preemptible is not None:
        frame["preemptible"] = preemptible
    return orjson.dumps(frame).decode()


def language_frame(language: str) -> str:
    """A ``language`` frame: speak and transcribe ``language`` from now on."""
    return orjson.dumps(
        {"type": "language", "ttsLanguage": language, "transcriptionLanguage": language}
    ).decode()


def end_frame(handoff: dict[str, Any]) -> str:
    """An ``end`` frame: the relay ends; ``handoffData`` goes to the ``<Connect action>`` URL."""
    return orjson.dumps({"type": "end", "handoffData": orjson.dumps(handoff).decode()}).decode()


def send_digits_frame(digits: str) -> str:
    """A ``sendDigits`` frame: the relay plays these DTMF keys on the call."""
    return orjson.dumps({"type": "sendDigits", "digits": digits}).decode()
