"""The native protocol on /ws, end to end: real uvicorn, real WebSocket client."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from gateway.core.codes import ErrorCode
from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini, wait_event
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_]


async def test_session_ready_on_connect(offline_gateway: RunningServer) -> None:
    async with await Client.connect(f"{offline_gateway.ws_url}/ws") as client:
        ready = await client.ready()
    assert ready["seq"] == 0
    assert ready["protocol"] == 1
    assert ready["session_id"].startswith("s_")
    assert len(ready["resume_token"]) >= 32
    assert (ready["provider"], ready["model"]) == ("offline", "offline-echo")


async def test_wscat_plain_text_in_spanish_gets_a_whole_turn(
    offline_gateway: RunningServer,
) -> None:
    async with await Client.connect(f"{offline_gateway.ws_url}/ws") as client:
        ready = await client.ready()
        await client.send("Hola, ¿cómo estás?")
        events = await client.turn()
    assert events[0]["type"] == "response.start"
    chunks = of_type(events, "response.tts")
    assert len(chunks) >= 2
    assert events[-1]["type"] == "response.end"
    assert events[-1]["status"] == "completed"
    assert {e["turn_id"] for e in events} == {events[0]["turn_id"]}
    assert [e["seq"] for e in [ready, *events]] == list(range(len(events) + 1))
    assert {e["session_id"] for e in events} == {ready["session_id"]}
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert "Has dicho" in chunks[0]["text"]
    latency = events[-1]["latency"]
    assert latency["total_ms"] >= latency["first_chunk_ms"] >= latency["first_token_ms"] >= 0


async def test_history_reaches_the_offline_provider(offline_gateway: RunningServer) -> None:
    async with await Client.connect(f"{offline_gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send({"type": "user.message", "text": "My name is Ada", "id": "u-1"})
        first = await client.turn()
        await client.send({"type": "user.message", "text": "What did I say?", "id": "u-2"})
        second = await client.turn()
    assert first[0]["in_reply_to"] == "u-1"
    assert second[0]["in_reply_to"] == "u-2"
    assert first[0]["turn_id"] != second[0]["turn_id"]
    assert "My name is Ada" in second[-1]["text"]


async def test_gemini_turns_carry_history_and_system_instruction(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Hello Ada. Nice to meet you! What can I do?", chunk_size=5)
    fake_gemini.reply("You told me your name is Ada.", chunk_size=7)
    async with await Client.connect(f"{gemini_gateway.ws_url}/ws") as client:
        ready = await client.ready()
        await client.send({"type": "user.message", "text": "I am Ada."})
        first = await client.turn()
        await client.send({"type": "user.message", "text": "Who am I?"})
        second = await client.turn()
    assert (ready["provider"], ready["model"]) == ("gemini", "gemini-test")
    assert [c["text"] for c in of_type(first, "response.tts")] == [
        "Hello Ada.",
        "Nice to meet you!",
        "What can I do?",
    ]
    assert first[-1]["text"] == "Hello Ada. Nice to meet you! What can I do?"
    assert second[-1]["status"] == "completed"
    requests = fake_gemini.wait_for_requests(2)
    assert requests[1].model == "gemini-test"
    assert requests[1].system_text == "You are a helpful voice assistant."
    assert requests[1].turns == [
        ("user", ["I am Ada."]),
        ("model", ["Hello Ada. Nice to meet you! What can I do?"]),
        ("user", ["Who am I?"]),
    ]


async def test_new_message_supersedes_the_streaming_turn(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    stalled = fake_gemini.stall(after_chunks=["First sentence here. ", "Second"])
    fake_gemini.reply("Fine, something else.")
    async with await Client.connect(f"{gemini_gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("Tell me a long story")
        head = await client.recv_type("response.tts")
        old_turn = head[0]["turn_id"]
        await client.send("Actually, something else")
        events = await client.turn(None)
        if events[-1]["turn_id"] == old_turn:
            events += await client.turn()
    ends = of_type(events, "response.end")
    assert [(e["turn_id"], e["status"]) for e in ends][0] == (old_turn, "superseded")
    end_index = events.index(ends[0])
    new_start = of_type(events, "response.start")[0]
    assert events.index(new_start) > end_index
    assert all(e.get("turn_id") != old_turn for e in events[end_index + 1 :])
    assert ends[0]["spoken_text"] == "First sentence here."
    assert ends[-1]["status"] == "completed"
    assert await wait_event(stalled.client_gone), "the superseded Gemini stream was not closed"
    second = fake_gemini.wait_for_requests(2)[1]
    assert second.turns[-2:] == [
        ("model", ["First sentence here."]),
        ("user", ["Actually, something else"]),
    ]


async def test_interrupt_keeps_heard_text_in_history(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    stalled = fake_gemini.stall(after_chunks=["One fish. Two fish. ", "Red fish."])
    async with await Client.connect(f"{gemini_gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("Count fish")
        head = await client.recv_type("response.tts")
        turn_id = head[0]["turn_id"]
        await client.send({"type": "interrupt", "turn_id": turn_id, "heard_text": "One fish."})
        events = await client.turn(turn_id)
        assert events[-1]["status"] == "interrupted"
        assert events[-1]["spoken_text"] == "One fish."
        assert await wait_event(stalled.client_gone)
        await client.send("And now?")
        await client.turn()
    second = fake_gemini.wait_for_requests(2)[1]
    assert second.turns[-2:] == [("model", ["One fish."]), ("user", ["And now?"])]


async def test_provider_failure_mid_stream_fails_the_turn_and_the_next_works(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.cut_after(["It starts well. ", "And then"])
    fake_gemini.reply("All good now.")
    async with await Client.connect(f"{gemini_gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("Hi")
        failed = await client.turn()
        await client.send("Again")
        ok = await client.turn()
    (error,) = of_type(failed, "error")
    assert error["code"] == "provider_error"
    assert error["turn_id"] == failed[0]["turn_id"]
    assert error["fatal"] is False
    assert error["retryable"] is True
    assert failed[-1]["status"] == "failed"
    assert failed[-1]["reason"]
    assert [c["text"] for c in of_type(failed, "response.tts")] == ["It starts well."]
    assert ok[-1]["status"] == "completed"
    assert ok[-1]["text"] == "All good now."


async def test_provider_rejecting_the_request_fails_the_turn_not_retryable(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.fail(400, "bad request")
    async with await Client.connect(f"{gemini_gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("Hi")
        events = await client.turn()
    (error,) = of_type(events, "error")
    assert (error["code"], error["retryable"], error["detail"]) == (
        "provider_error",
        False,
        "bad_request",
    )
    assert events[-1]["status"] == "failed"
    assert "test-key-not-secret" not in str(events)


BAD_FRAMES = [
    ("[1, 2]", ErrorCode.NOT_AN_OBJECT),
    ("42", ErrorCode.NOT_AN_OBJECT),
    ('{"text": "hi"}', ErrorCode.MISSING_TYPE),
    ('{"type": "dance"}', ErrorCode.UNKNOWN_TYPE),
    ('{"type": "user.message"}', ErrorCode.INVALID_FIELD),
    ('{"type": "user.message", "text": 5}', ErrorCode.INVALID_FIELD),
    ('{"type": "interrupt", "heard_text": ["x"]}', ErrorCode.INVALID_FIELD),
    ('{"type": "session.update", "language": "??"}', ErrorCode.INVALID_FIELD),
    ('{"type": "user.message", "text": "   "}', ErrorCode.EMPTY_TEXT),
    ('{"type": "user.message", "text": "' + "a" * 5000 + '"}', ErrorCode.TEXT_TOO_LONG),
    ("{broken json", ErrorCode.INVALID_JSON),
    ("x" * 70000, ErrorCode.FRAME_TOO_LARGE),
    (b"\x00\x01binary", ErrorCode.BINARY_FRAME),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES, ids=[c for _, c in BAD_FRAMES])
async def test_bad_input_gets_an_error_and_the_connection_stays_open(
    offline_gateway: RunningServer, frame: str | bytes, code: ErrorCode
) -> None:
    async with await Client.connect(f"{offline_gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send(frame)
        error = await client.recv()
        await client.send({"type": "ping", "id": "after"})
        pong = await client.recv()
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["fatal"] is False
    assert error["message"]
    assert (pong["type"], pong["id"]) == ("pong", "after")
    assert pong["seq"] == error["seq"]  # a connection event: it takes no seq of its own


async def test_control_events(offline_gateway: RunningServer) -> None:
    async with await Client.connect(f"{offline_gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send({"type": "ping"})
        pong = await client.recv()
        await client.send(
            {"type": "session.update", "language": "es-ES", "instructions": "Responde en español."}
        )
        updated = await client.recv()
        await client.send({"type": "response.create"})
        greeting = await client.turn()
        await client.send({"type": "session.end"})
        ended = await client.recv()
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert (pong["type"], pong["id"]) == ("pong", None)
    assert (updated["type"], updated["language"]) == ("session.updated", "es-ES")
    assert updated["instructions"] == "Responde en español."
    assert greeting[0]["in_reply_to"] is None
    assert "¡Hola!" in greeting[-1]["text"]
    assert ended == {**ended, "type": "session.ended", "reason": "ended by the client"}
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1000


async def test_session_end_mid_turn_ends_the_turn_first(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    stalled = fake_gemini.stall(after_chunks=["Hello there. ", "And"])
    async with await Client.connect(f"{gemini_gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("Hi")
        await client.recv_type("response.tts")
        await client.send({"type": "session.end"})
        events = await client.recv_type("session.ended")
    assert [e["type"] for e in events] == ["response.end", "session.ended"]
    assert events[0]["status"] == "interrupted"
    assert await wait_event(stalled.client_gone)


async def test_disconnect_past_the_grace_window_closes_the_provider_stream(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_gateway(
        GEMINI_API_KEY="k", GEMINI_BASE_URL=fake_gemini.url, GATEWAY_RESUME_GRACE_S=0
    )
    stalled = fake_gemini.stall(after_chunks=["Hello there. ", "And"])
    client = await Client.connect(f"{gateway.ws_url}/ws")
    await client.ready()
    await client.send("Hi")
    await client.recv_type("response.tts")
    await client.ws.close()
    assert await wait_event(stalled.client_gone)


async def test_sessions_are_independent(offline_gateway: RunningServer) -> None:
    url = f"{offline_gateway.ws_url}/ws"
    async with await Client.connect(url) as a, await Client.connect(url) as b:
        ready_a, ready_b = await a.ready(), await b.ready()
        await a.send("I like apples")
        await b.send("I like pears")
        turn_a, turn_b = await a.turn(), await b.turn()
    assert ready_a["session_id"] != ready_b["session_id"]
    assert "apples" in turn_a[-1]["text"]
    assert "pears" not in turn_a[-1]["text"]
    assert "pears" in turn_b[-1]["text"]
    assert "apples" not in turn_b[-1]["text"]
