"""Hostile input to every adapter's parser: nothing raises except the documented
errors, and every frame is either used or dropped with a log line."""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.adapters import layercode_wire, openai_wire
from gateway.adapters.retell import RetellCodec
from gateway.adapters.twilio import TwilioCodec
from gateway.connection import Reply
from gateway.core.events import ClientEvent
from gateway.core.wire import WireError
from tests.support.strategies import json_values


def shaped(tag: str, kinds: list[str], fields: list[str]) -> st.SearchStrategy[bytes]:
    """Objects that look like the platform's frames, with fields of any type."""
    return st.fixed_dictionaries(
        {tag: st.one_of(st.sampled_from(kinds), json_values)},
        optional={name: json_values for name in fields},
    ).map(orjson.dumps)


frames = st.one_of(
    st.binary(max_size=100),
    st.text(max_size=100),
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.just("[" * 5000),
    st.just('{"type":"prompt","voicePrompt":"' + "x" * 70_000 + '","last":true}'),
)
TWILIO = shaped(
    "type",
    ["setup", "prompt", "interrupt", "dtmf", "info", "error"],
    [
        "voicePrompt",
        "last",
        "lang",
        "utteranceUntilInterrupt",
        "durationUntilInterruptMs",
        "digit",
        "callSid",
        "customParameters",
        "description",
        "name",
        "value",
    ],
)
RETELL = shaped(
    "interaction_type",
    ["ping_pong", "call_details", "update_only", "response_required", "reminder_required"],
    ["timestamp", "response_id", "transcript", "call", "turntaking"],
)
LAYERCODE = shaped(
    "type",
    ["message", "session.start", "session.end", "session.update", "data"],
    ["session_id", "conversation_id", "turn_id", "text", "transcript", "data"],
)
OPENAI = st.fixed_dictionaries(
    {
        "messages": st.one_of(
            json_values,
            st.lists(
                st.fixed_dictionaries(
                    {
                        "role": st.one_of(
                            st.sampled_from(["user", "assistant", "system", "tool"]), json_values
                        )
                    },
                    optional={"content": json_values},
                ),
                max_size=4,
            ),
        )
    },
    optional={"model": json_values, "stream": json_values},
).map(orjson.dumps)

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)


EVENT_TYPES = typing.get_args(ClientEvent)


def usable(result: object) -> bool:
    return result is None or isinstance(result, (WireError, Reply, *EVENT_TYPES))


def refusal(call: Callable[[], object], *errors: type[Exception]) -> str | None:
    """The message of a documented refusal, ``None`` when the input was accepted."""
    try:
        call()
    except errors as refused:
        return str(refused)
    return None


@FUZZ
@given(st.one_of(frames, TWILIO.map(bytes.decode)))
def test_twilio_frames(frame: str | bytes) -> None:
    codec = TwilioCodec(max_frame_bytes=65536, dtmf_note="pressed {digit}", failure_text="")
    codec.setup(frame)
    assert usable(codec.decode(frame))


@FUZZ
@given(st.one_of(frames, RETELL.map(bytes.decode)))
def test_retell_frames(frame: str | bytes) -> None:
    codec = RetellCodec(max_frame_bytes=65536, welcome="Hi")
    assert usable(codec.decode(frame))


@FUZZ
@given(st.one_of(st.binary(max_size=100), LAYERCODE))
def test_layercode_webhooks(raw: bytes) -> None:
    message = refusal(
        lambda: layercode_wire.parse_webhook(raw),
        layercode_wire.BadWebhook,
        layercode_wire.UnknownWebhook,
    )
    assert message is None or message


@FUZZ
@given(st.one_of(st.binary(max_size=100), OPENAI))
def test_openai_requests(raw: bytes) -> None:
    message = refusal(
        lambda: openai_wire.split_messages(openai_wire.parse_request(raw)),
        openai_wire.BadRequest,
    )
    assert message is None or message


@FUZZ
@given(st.text(max_size=80), st.binary(max_size=60), st.floats(allow_nan=False))
def test_layercode_signature_headers(header: str, raw: bytes, now: float) -> None:
    problem = layercode_wire.signature_problem(header, raw, "secret", now)
    assert problem is None or isinstance(problem, str)
