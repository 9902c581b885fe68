"""Hostile input to the native protocol parser: it never raises, and every frame
becomes an event or a documented error."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.codes import ErrorCode
from gateway.core.events import Ping, PlaybackAck, UserMessage
from gateway.core.wire import CLIENT_TYPES, WireError, decode
from tests.support.strategies import json_values

MAX = 65536

events_ish = st.fixed_dictionaries(
    {"type": st.sampled_from([*CLIENT_TYPES, "", "USER.MESSAGE", "x" * 300])},
    optional={
        "text": json_values,
        "id": json_values,
        "turn_id": json_values,
        "heard_text": json_values,
        "index": json_values,
        "instructions": json_values,
        "language": json_values,
    },
)
control_text = st.text(
    alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Lu", "Ll", "So"]),
    max_size=200,
)


def check(result: object) -> None:
    if isinstance(result, WireError):
        assert result.code in set(ErrorCode)
        assert result.message
    else:
        assert type(result).__module__ == "gateway.core.events"


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        control_text, st.binary(max_size=200), json_values.map(lambda v: orjson.dumps(v).decode())
    )
)
def test_any_frame_is_an_event_or_a_documented_error(frame: str | bytes) -> None:
    check(decode(frame, max_bytes=MAX))


@settings(max_examples=300, deadline=None)
@given(events_ish)
def test_event_shaped_objects_with_wrong_fields(obj: dict[str, object]) -> None:
    result = decode(orjson.dumps(obj).decode(), max_bytes=MAX)
    check(result)
    if isinstance(result, UserMessage):
        assert isinstance(result.text, str)
    if isinstance(result, PlaybackAck):
        assert isinstance(result.index, int)
        assert result.index >= 0
    if isinstance(result, Ping):
        assert result.id is None or isinstance(result.id, str | int)


def test_pathological_frames() -> None:
    cases = {
        "[" * 100_000: ErrorCode.FRAME_TOO_LARGE,
        "[" * 5_000: ErrorCode.INVALID_JSON,
        '{"type":"ping","id":' + "9" * 40 + "}": ErrorCode.INVALID_FIELD,
        '{"type":"user.message","text":"' + "x" * 70_000 + '"}': ErrorCode.FRAME_TOO_LARGE,
        '{"type":"user.message","text":"\\u0000\\u0007"}': None,
        '{"type":"playback.ack","turn_id":"t1","index":-1}': ErrorCode.INVALID_FIELD,
        '{"type":"user.message","text":"a","type":"ping"}': None,
    }
    for frame, code in cases.items():
        result = decode(frame, max_bytes=MAX)
        if code is None:
            assert not isinstance(result, WireError), frame[:40]
        else:
            assert isinstance(result, WireError), frame[:40]
            assert result.code == code, (frame[:40], result)
