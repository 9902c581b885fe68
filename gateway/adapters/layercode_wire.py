"""Layercode's webhook wire format: request bodies, signatures, SSE replies.

Layercode posts one JSON webhook per event (``message``, ``session.start``,
``session.end``, ``session.update``, ``data``) and reads the answer as
Server-Sent Events: ``response.tts`` (text to speak) and ``response.end``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gateway.adapters.sse import sse_data
from gateway.errors import RequestError

#: How far a signature's timestamp may be from now, in seconds.
SIGNATURE_TOLERANCE_S: Final = 300.0

_Id = Annotated[str, Field(min_length=1, max_length=256)]


class _Webhook(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    session_id: str | None = None
    conversation_id: _Id


class MessageHook(_Webhook):
    """The user said something: answer it."""

    type: Literal["message"]
    text: str
    turn_id: _Id


class SessionStartHook(_Webhook):
    """A session began: ``turn_id`` is the assistant's welcome turn."""

    type: Literal["session.start"]
    turn_id: _Id


class SessionEndHook(_Webhook):
    """The session ended (carries a transcript and statistics, not used)."""

    type: Literal["session.end"]


class SessionUpdateHook(_Webhook):
    """Asynchronous session information (recording status and URL)."""

    type: Literal["session.update"]
    conversation_id: _Id | None = None  # type: ignore[assignment]


class DataHook(_Webhook):
    """Data the browser sent with ``client.response.data``."""

    type: Literal["data"]
    conversation_id: _Id | None = None  # type: ignore[assignment]
    turn_id: str | None = None
    data: Any = None


Webhook = Annotated[
    MessageHook | SessionStartHook | SessionEndHook | SessionUpdateHook | DataHook,
    Field(discriminator="type"),
]

KNOWN_TYPES: Final = frozenset(
    {"message", "session.start", "session.end", "session.update", "data"}
)

_WEBHOOK: Final[TypeAdapter[Webhook]] = TypeAdapter(Webhook)


class BadWebhook(RequestError):
    """The body is not a webhook this adapter can read; the message says why."""


class UnknownWebhook(RequestError):
    """A well-formed webhook of a type this adapter does not know."""

    def __init__(self, type_: str, turn_id: str | None) -> None:
        super().__init__(type_)
        self.type = type_
        self.turn_id = turn_id


def parse_webhook(raw: bytes) -> Webhook:
    """The webhook in ``raw``; raises :class:`BadWebhook` or :class:`UnknownWebhook`."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadWebhook(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadWebhook("the body must be a JSON object")
    type_ = body.get("type")
    if not isinstance(type_, str) or not type_:
        raise BadWebhook("type: a non-empty string is required")
    if type_ not in KNOWN_TYPES:
        turn_id = body.get("turn_id")
        raise UnknownWebhook(type_[:64], turn_id if isinstance(turn_id, str) else None)
    try:
        return _WEBHOOK.validate_python(body)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise BadWebhook("; ".join(problems)) from exc


def signature_problem(header: str | None, raw: bytes, secret: str, now: float) -> str | None:
    """Why ``layercode-signature`` does not sign ``raw`` (``None``: it does).

    The header is ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``;
    the timestamp must be within :data:`SIGNATURE_TOLERANCE_S` of ``now``.
    """
    if not header:
        return "the layercode-signature header is missing"
    fields: dict[str, str] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, value)
    stamp, given = fields.get("t", ""), fields.get("v1", "")
    if not stamp.isdigit() or len(stamp) > 12 or not given:
        return "the layercode-signature header is malformed"
    if abs(now - int(stamp)) > SIGNATURE_TOLERANCE_S:
        return "the layercode-signature timestamp is too old or in the future"
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        return "the layercode-signature does not match the body"
    return None


def tts(content: str, turn_id: str) -> bytes:
    """A ``response.tts`` event: text for Layercode to speak."""
    return sse_data({"type": "response.tts", "content": content, "turn_id": turn_id})


def data(content: dict[str, Any], turn_id: str) -> bytes:
    """A ``response.data`` event: JSON for the client (the browser), not spoken."""
    return sse_data({"type": "response.data", "content": content, "turn_id": turn_id})


def end(turn_id: str) -> bytes:
    """The ``response.end`` event that closes a turn."""
    return sse_data({"type": "response.end", "turn_id": turn_id})
