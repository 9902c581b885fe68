"""Layercode simulator: webhooks over real HTTP to the real gateway, SSE read back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest

from tests.adapters.http_helpers import (
    SseReader,
    http_client,
    layercode_signature,
    read_sse,
    start_on_gemini,
)
from tests.support.fake_gemini import FakeGemini, wait_event
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

PATH = "/layercode/agent"
WELCOME = "Hi there, this is the test agent."
SECRET = "whsec-test-not-secret"


@pytest.fixture
def gateway(start_gateway: GatewayFactory, fake_gemini: FakeGemini) -> RunningServer:
    return start_on_gemini(start_gateway, fake_gemini, LAYERCODE_WELCOME=WELCOME)


def message(
    text: str, turn_id: str, *, conversation: str = "conv-1", session: str = "sess-1"
) -> dict[str, Any]:
    return {
        "type": "message",
        "session_id": session,
        "conversation_id": conversation,
        "turn_id": turn_id,
        "text": text,
        "custom_metadata": {"plan": "gold"},
    }


def session_start(turn_id: str, *, conversation: str = "conv-1") -> dict[str, Any]:
    return {
        "type": "session.start",
        "session_id": "sess-1",
        "conversation_id": conversation,
        "turn_id": turn_id,
    }


async def webhook(
    client: httpx.AsyncClient, body: dict[str, Any] | bytes, **kwargs: Any
) -> tuple[int, list[Any]]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return await read_sse(client, PATH, content=raw, headers=headers, **kwargs)


def spoken(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"] for e in events if e["type"] == "response.tts"]


def assert_one_turn(events: list[dict[str, Any]], turn_id: str) -> None:
    assert events, "no events"
    assert events[-1] == {"type": "response.end", "turn_id": turn_id}
    assert all(e["turn_id"] == turn_id for e in events)
    assert [e["type"] for e in events[:-1]] == ["response.tts"] * (len(events) - 1)


async def test_session_start_speaks_the_welcome_and_keeps_it_in_history(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Nice to meet you. What can I do for you?", chunk_size=6)
    async with http_client(gateway.http_url) as client:
        status, welcome = await webhook(client, session_start("turn-w"))
        assert status == 200
        assert welcome == [
            {"type": "response.tts", "content": WELCOME, "turn_id": "turn-w"},
            {"type": "response.end", "turn_id": "turn-w"},
        ]
        status, events = await webhook(client, message("Hello!", "turn-1"))
    assert status == 200
    assert_one_turn(events, "turn-1")
    assert spoken(events) == ["Nice to meet you.", "What can I do for you?"]
    assert fake_gemini.requests[0].turns == [("model", [WELCOME]), ("user", ["Hello!"])]


async def test_history_is_keyed_by_conversation_id_not_session_id(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Hello Ada.")
    fake_gemini.reply("Your name is Ada.")
    fake_gemini.reply("I do not know you yet.")
    async with http_client(gateway.http_url) as client:
        _, first = await webhook(client, message("I am Ada.", "turn-1", session="sess-a"))
        # Layercode reconnected: a new session_id, the same conversation_id.
        _, second = await webhook(client, message("Who am I?", "turn-2", session="sess-b"))
        _, other = await webhook(client, message("Who am I?", "turn-1", conversation="conv-2"))
    assert spoken(first) == ["Hello Ada."]
    assert_one_turn(second, "turn-2")
    assert spoken(second) == ["Your name is Ada."]
    assert spoken(other) == ["I do not know you yet."]
    requests = fake_gemini.requests
    assert requests[1].turns == [
        ("user", ["I am Ada."]),
        ("model", ["Hello Ada."]),
        ("user", ["Who am I?"]),
    ]
    assert requests[2].turns == [("user", ["Who am I?"])]
    assert requests[1].system_text == "You are a helpful voice assistant."


async def test_a_new_message_supersedes_the_streaming_one(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    stalled = fake_gemini.stall(after_chunks=["Let me think about that. ", "And"])
    fake_gemini.reply("Sure, something else.")
    async with http_client(gateway.http_url) as client:
        body = orjson.dumps(message("Tell me a long story", "turn-1"))
        async with client.stream("POST", PATH, content=body) as first:
            reader = SseReader(first)
            head = await reader.next()
            assert head == {
                "type": "response.tts",
                "content": "Let me think about that.",
                "turn_id": "turn-1",
            }
            status, second = await webhook(client, message("Something else", "turn-2"))
            rest = await reader.rest()
    assert rest == [{"type": "response.end", "turn_id": "turn-1"}]
    assert status == 200
    assert_one_turn(second, "turn-2")
    assert spoken(second) == ["Sure, something else."]
    assert await wait_event(stalled.client_gone), "the superseded Gemini stream was not closed"
    assert fake_gemini.requests[1].turns == [
        ("user", ["Tell me a long story"]),
        ("model", ["Let me think about that."]),
        ("user", ["Something else"]),
    ]


async def test_a_failed_turn_apologises_and_ends_then_the_next_turn_works(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.fail(503)
    fake_gemini.reply("I am back.")
    async with http_client(gateway.http_url) as client:
        status, failed = await webhook(client, message("Hello?", "turn-1"))
        _, after = await webhook(client, message("Are you there?", "turn-2"))
    assert status == 200
    assert_one_turn(failed, "turn-1")
    (apology,) = spoken(failed)
    assert apology.startswith("Sorry")
    assert spoken(after) == ["I am back."]
    # The failed turn said nothing of its own, so the history has no reply for it.
    assert fake_gemini.requests[1].turns == [("user", ["Hello?", "Are you there?"])]


async def test_malformed_bodies_get_400_and_the_conversation_goes_on(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("First answer.")
    fake_gemini.reply("Second answer.")
    bad_bodies: list[tuple[bytes, str]] = [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (orjson.dumps({"conversation_id": "conv-1"}), "type"),
        (orjson.dumps({"type": "message", "turn_id": "t", "text": "hi"}), "conversation_id"),
        (orjson.dumps({**message("x", "t"), "text": None}), "text"),
        (orjson.dumps({**message("x", "t"), "turn_id": ""}), "turn_id"),
        (orjson.dumps(session_start("t") | {"turn_id": 7}), "turn_id"),
    ]
    async with http_client(gateway.http_url) as client:
        _, first = await webhook(client, message("One", "turn-1"))
        for body, problem in bad_bodies:
            response = await client.post(PATH, content=body)
            assert response.status_code == 400, body
            error = response.json()["error"]
            assert error["code"] == "invalid_webhook"
            assert problem in error["message"], (body, error)
        status, unknown = await webhook(
            client, {"type": "session.pause", "conversation_id": "conv-1", "turn_id": "turn-x"}
        )
        assert (status, unknown) == (200, [{"type": "response.end", "turn_id": "turn-x"}])
        for kind, extra in (("session.update", {"recording_status": "completed"}), ("data", {})):
            ack = await client.post(PATH, json={"type": kind, "conversation_id": "conv-1", **extra})
            assert (ack.status_code, ack.json()) == (200, {"ok": True})
        _, second = await webhook(client, message("Two", "turn-2"))
    assert spoken(first) == ["First answer."]
    assert spoken(second) == ["Second answer."]
    assert len(fake_gemini.requests) == 2
    assert fake_gemini.requests[1].turns == [
        ("user", ["One"]),
        ("model", ["First answer."]),
        ("user", ["Two"]),
    ]


async def test_two_messages_at_once_both_end_and_the_later_one_is_answered(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    # Both webhooks reach the session within one store commit: the first one's
    # stream must still end (it once waited for events that never came).
    fake_gemini.reply("First reply here. It goes on.", chunk_size=20, delay_s=0.2)
    fake_gemini.reply("Second reply here. It goes on.", chunk_size=20, delay_s=0.2)
    async with http_client(gateway.http_url) as client:
        (_, one), (_, two) = await asyncio.gather(
            webhook(client, message("One", "turn-1")), webhook(client, message("Two", "turn-2"))
        )
    assert_one_turn(one, "turn-1")
    assert_one_turn(two, "turn-2")
    assert "It goes on." in spoken(one) + spoken(two)


async def test_a_retried_turn_id_starts_no_second_turn(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Only once.")
    async with http_client(gateway.http_url) as client:
        _, first = await webhook(client, message("Hello", "turn-1"))
        status, retry = await webhook(client, message("Hello", "turn-1"))
    assert spoken(first) == ["Only once."]
    assert (status, retry) == (200, [{"type": "response.end", "turn_id": "turn-1"}])
    assert len(fake_gemini.requests) == 1


async def test_empty_text_ends_the_turn_without_asking_the_model(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    async with http_client(gateway.http_url) as client:
        status, events = await webhook(client, message("   ", "turn-1"))
    assert (status, events) == (200, [{"type": "response.end", "turn_id": "turn-1"}])
    assert fake_gemini.requests == []


async def test_session_end_stops_the_streaming_turn_and_the_conversation_resumes(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    stalled = fake_gemini.stall(after_chunks=["Once upon a time. ", "There"])
    fake_gemini.reply("Welcome back.")
    ended = {"type": "session.end", "session_id": "sess-1", "conversation_id": "conv-1"}
    async with http_client(gateway.http_url) as client:
        body = orjson.dumps(message("Tell me a story", "turn-1"))
        async with client.stream("POST", PATH, content=body) as streaming:
            reader = SseReader(streaming)
            assert (await reader.next())["content"] == "Once upon a time."
            response = await client.post(PATH, json=ended | {"transcript": [], "duration": 3})
            assert (response.status_code, response.json()) == (200, {"ok": True})
            assert await reader.rest() == [{"type": "response.end", "turn_id": "turn-1"}]
        assert await wait_event(stalled.client_gone), "the Gemini stream was not closed"
        _, later = await webhook(client, message("I am back", "turn-2", session="sess-2"))
    assert spoken(later) == ["Welcome back."]
    assert fake_gemini.requests[1].turns == [
        ("user", ["Tell me a story"]),
        ("model", ["Once upon a time."]),
        ("user", ["I am back"]),
    ]


async def test_a_client_leaving_mid_stream_interrupts_the_turn_at_what_was_sent(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    stalled = fake_gemini.stall(after_chunks=["First part. ", "Sec"])
    fake_gemini.reply("Go on.")
    async with http_client(gateway.http_url) as client:
        body = orjson.dumps(message("Talk", "turn-1"))
        async with client.stream("POST", PATH, content=body) as streaming:
            assert (await SseReader(streaming).next())["content"] == "First part."
        assert await wait_event(stalled.client_gone), "the Gemini stream was not closed"
        _, after = await webhook(client, message("Next", "turn-2"))
    assert spoken(after) == ["Go on."]
    assert fake_gemini.requests[1].turns == [
        ("user", ["Talk"]),
        ("model", ["First part."]),
        ("user", ["Next"]),
    ]


@pytest.fixture
def signed_gateway(start_gateway: GatewayFactory, fake_gemini: FakeGemini) -> RunningServer:
    return start_on_gemini(
        start_gateway, fake_gemini, LAYERCODE_WELCOME=WELCOME, LAYERCODE_WEBHOOK_SECRET=SECRET
    )


async def test_signed_webhooks_are_accepted(signed_gateway: RunningServer) -> None:
    body = orjson.dumps(session_start("turn-w"))
    now = int(time.time())
    async with http_client(signed_gateway.http_url) as client:
        for timestamp in (now, now - 200):  # within the 300 s tolerance
            signature = layercode_signature(SECRET, body, timestamp)
            status, events = await webhook(client, body, headers={"layercode-signature": signature})
            assert status == 200
            assert spoken(events) == [WELCOME]


async def test_unsigned_or_badly_signed_webhooks_are_refused(
    signed_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    body = orjson.dumps(message("Hello", "turn-1"))
    now = int(time.time())
    cases: list[tuple[str | None, str]] = [
        (None, "missing"),
        ("v1=abc", "malformed"),
        (f"t={now},v1=", "malformed"),
        (layercode_signature("not-the-secret", body, now), "does not match"),
        (layercode_signature(SECRET, body + b" ", now), "does not match"),
        (layercode_signature(SECRET, body, now - 310), "too old"),
        (layercode_signature(SECRET, body, now + 310), "in the future"),
    ]
    async with http_client(signed_gateway.http_url) as client:
        for signature, expected in cases:
            headers = {} if signature is None else {"layercode-signature": signature}
            response = await client.post(PATH, content=body, headers=headers)
            assert response.status_code == 401, signature
            error = response.json()["error"]
            assert error["code"] == "invalid_signature"
            assert expected in error["message"], (signature, error)
    assert fake_gemini.requests == []
