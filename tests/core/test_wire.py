"""Decoding client frames and encoding server events in the native protocol."""

from __future__ import annotations

import orjson
import pytest

from gateway.core.codes import ErrorCode
from gateway.core.events import (
    Interrupt,
    Latency,
    Ping,
    ResponseCreate,
    ResponseEnd,
    ResponseTts,
    SessionEnd,
    SessionUpdate,
    UserMessage,
)
from gateway.core.wire import CLIENT_TYPES, WireError, decode, encode

MAX = 65536


@pytest.mark.parametrize(
    ("frame", "event"),
    [
        ("Hola, ¿cómo estás?", UserMessage("Hola, ¿cómo estás?")),
        ("no thanks", UserMessage("no thanks")),
        ("3 apples please", UserMessage("3 apples please")),
        ('{"type":"user.message","text":"hi","id":"m-1"}', UserMessage("hi", id="m-1")),
        ('{"type":"user.message","text":"hi","future":1}', UserMessage("hi")),
        ('{"type":"interrupt"}', Interrupt()),
        ('{"type":"interrupt","turn_id":"t1","heard_text":"He"}', Interrupt("t1", "He")),
        ('{"type":"response.create","instructions":"Greet"}', ResponseCreate("Greet")),
        ('{"type":"session.update","language":"es"}', SessionUpdate(language="es")),
        ('{"type":"ping","id":7}', Ping(7)),
        ('{"type":"ping","id":"x"}', Ping("x")),
        ('{"type":"session.end"}', SessionEnd()),
    ],
)
def test_decode_valid_frames(frame: str, event: object) -> None:
    assert decode(frame, max_bytes=MAX) == event


@pytest.mark.parametrize(
    ("frame", "code", "says"),
    [
        (b"\x00", ErrorCode.BINARY_FRAME, "binary"),
        ("é" * 40000, ErrorCode.FRAME_TOO_LARGE, "65536"),
        ("{nope", ErrorCode.INVALID_JSON, "JSON"),
        ("[]", ErrorCode.NOT_AN_OBJECT, "object"),
        ("null", ErrorCode.NOT_AN_OBJECT, "object"),
        ("{}", ErrorCode.MISSING_TYPE, "type"),
        ('{"type":null}', ErrorCode.MISSING_TYPE, "type"),
        ('{"type":"user.msg","text":"x"}', ErrorCode.UNKNOWN_TYPE, "user.message"),
        ('{"type":"user.message"}', ErrorCode.INVALID_FIELD, "'text' is required"),
        ('{"type":"user.message","text":1}', ErrorCode.INVALID_FIELD, "'text'"),
        ('{"type":"user.message","text":"x","id":""}', ErrorCode.INVALID_FIELD, "'id'"),
        ('{"type":"ping","id":1.5}', ErrorCode.INVALID_FIELD, "'id'"),
        ('{"type":"interrupt","turn_id":3}', ErrorCode.INVALID_FIELD, "'turn_id'"),
    ],
)
def test_decode_bad_frames_names_the_problem(
    frame: str | bytes, code: ErrorCode, says: str
) -> None:
    result = decode(frame, max_bytes=MAX)
    assert isinstance(result, WireError)
    assert result.code == code
    assert says in result.message


def test_unknown_type_lists_every_client_type() -> None:
    result = decode('{"type":"x"}', max_bytes=MAX)
    assert isinstance(result, WireError)
    assert all(t in result.message for t in CLIENT_TYPES)


def test_encode_puts_type_session_and_seq_first() -> None:
    frame = encode(ResponseTts(session_id="s", seq=4, turn_id="t1", index=0, text="Hi."))
    assert frame == (
        '{"type":"response.tts","session_id":"s","seq":4,"turn_id":"t1","index":0,"text":"Hi."}'
    )


def test_encode_nests_latency() -> None:
    event = ResponseEnd(
        session_id="s",
        seq=9,
        turn_id="t1",
        status="interrupted",
        text="A. B",
        spoken_text="A.",
        reason="interrupted by the client",
        latency=Latency(12, 30, 45),
    )
    assert orjson.loads(encode(event))["latency"] == {
        "first_token_ms": 12,
        "first_chunk_ms": 30,
        "total_ms": 45,
    }
