"""A simulated Retell custom-LLM call against the real gateway on ``/retell/{call_id}``."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from websockets.exceptions import InvalidStatus

from gateway.adapters.retell import REMINDER_INSTRUCTIONS
from tests.adapters.ws_helpers import (
    as_turns,
    delete_session,
    keyed_session_ids,
    start_on_gemini,
)
from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini, wait_event
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

WELCOME = "Hello, you are talking to the gateway."
CONFIG = {"response_type": "config", "config": {"auto_reconnect": True, "call_details": True}}


@pytest.fixture
def retell_gateway(start_gateway: GatewayFactory, fake_gemini: FakeGemini) -> RunningServer:
    return start_on_gemini(start_gateway, fake_gemini, RETELL_WELCOME=WELCOME)


def begin(content: str) -> dict[str, Any]:
    return {
        "response_type": "response",
        "response_id": 0,
        "content": content,
        "content_complete": True,
        "end_call": False,
    }


def utterance(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def required(response_id: int, transcript: list[dict[str, str]], kind: str = "response") -> str:
    frame = {
        "interaction_type": f"{kind}_required",
        "response_id": response_id,
        "transcript": transcript,
    }
    return orjson.dumps(frame).decode()


async def connect(gateway: RunningServer, call_id: str) -> tuple[Client, list[dict[str, Any]]]:
    """Dial like Retell does; the client and the two opening frames."""
    call = await Client.connect(f"{gateway.ws_url}/retell/{call_id}")
    return call, [await call.recv(), await call.recv()]


async def response(call: Client, response_id: int) -> list[dict[str, Any]]:
    """Frames up to ``content_complete`` of ``response_id`` (ping_pong frames skipped)."""
    frames = await call.recv_until(
        lambda f: f.get("response_id") == response_id and f.get("content_complete") is True
    )
    return [f for f in frames if f["response_type"] == "response"]


def content(frames: list[dict[str, Any]]) -> str:
    return "".join(f["content"] for f in frames)


async def test_a_call_with_welcome_two_turns_and_transcript_history(
    retell_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Hi Ada, nice to meet you. What can I do?", chunk_size=6)
    fake_gemini.reply("You are Ada.")
    first_transcript = [utterance("agent", WELCOME), utterance("user", "I am Ada.")]
    # Retell's transcript is the truth: the agent was cut off after "Hi Ada,".
    second_transcript = [
        *first_transcript,
        utterance("agent", "Hi Ada,"),
        utterance("user", "Who am I?"),
    ]
    call, opening = await connect(retell_gateway, "call_two_turns")
    async with call:
        await call.send(
            {
                "interaction_type": "call_details",
                "call": {"call_id": "call_two_turns", "agent_id": "a1", "metadata": {"tier": "1"}},
            }
        )
        await call.send({"interaction_type": "ping_pong", "timestamp": 1703302407333})
        pong = await call.recv()
        await call.send(
            {
                "interaction_type": "update_only",
                "transcript": first_transcript[:1],
                "turntaking": "user_turn",
            }
        )
        await call.send(required(1, first_transcript))
        first = await response(call, 1)
        await call.send(required(2, second_transcript))
        second = await response(call, 2)
    assert opening == [CONFIG, begin(WELCOME)]
    assert pong == {"response_type": "ping_pong", "timestamp": 1703302407333}
    assert {f["response_id"] for f in first} == {1}
    assert [f["content_complete"] for f in first] == [False] * (len(first) - 1) + [True]
    assert len(first) >= 3
    assert first[-1] == {
        "response_type": "response",
        "response_id": 1,
        "content": "",
        "content_complete": True,
        "end_call": False,
    }
    assert content(first) == "Hi Ada, nice to meet you. What can I do? "
    assert content(second) == "You are Ada. "
    requests = fake_gemini.wait_for_requests(2)
    assert requests[0].turns == as_turns(first_transcript)
    assert requests[1].turns == as_turns(second_transcript)


async def test_a_newer_response_id_silences_the_older_one(
    retell_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    stalled = fake_gemini.stall(after_chunks=["Let me tell you a long story. ", "It begins"])
    fake_gemini.reply("Sure, something else.")
    transcript = [utterance("user", "Tell me a story")]
    newer = [*transcript, utterance("agent", "Let me"), utterance("user", "Actually, no")]
    call, _ = await connect(retell_gateway, "call_supersede")
    async with call:
        await call.send(required(1, transcript))
        head = await call.recv()
        await call.send(required(2, newer))
        frames = [head, *await response(call, 2)]
    assert (head["response_id"], head["content_complete"]) == (1, False)
    first_new = next(i for i, f in enumerate(frames) if f["response_id"] == 2)
    assert all(f["response_id"] == 2 for f in frames[first_new:])
    assert not any(f["response_id"] == 1 and f["content_complete"] for f in frames)
    assert content(frames[first_new:]) == "Sure, something else. "
    assert await wait_event(stalled.client_gone), "the superseded stream was not closed"
    assert fake_gemini.wait_for_requests(2)[1].turns == as_turns(newer)


async def test_reminder_asks_the_model_to_re_engage(
    retell_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Are you still there?")
    transcript = [utterance("agent", WELCOME)]
    call, _ = await connect(retell_gateway, "call_reminder")
    async with call:
        await call.send(required(1, transcript, kind="reminder"))
        frames = await response(call, 1)
    assert content(frames) == "Are you still there? "
    (request,) = fake_gemini.wait_for_requests(1)
    assert REMINDER_INSTRUCTIONS in (request.system_text or "")
    assert request.turns[0] == ("model", [WELCOME])


async def test_provider_failure_completes_the_response_and_the_next_works(
    retell_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.fail(400)
    fake_gemini.cut_after(["It starts well. ", "And then"])
    fake_gemini.reply("Working again.")
    transcript = [utterance("user", "Hi")]
    call, _ = await connect(retell_gateway, "call_failure")
    async with call:
        await call.send(required(1, transcript))
        refused = await response(call, 1)
        await call.send(required(2, transcript))
        cut = await response(call, 2)
        await call.send(required(3, transcript))
        ok = await response(call, 3)
    assert refused == [
        {
            "response_type": "response",
            "response_id": 1,
            "content": "",
            "content_complete": True,
            "end_call": False,
        }
    ]
    assert [(f["content"], f["content_complete"]) for f in cut] == [
        ("It starts well. ", False),
        ("", True),
    ]
    assert content(ok) == "Working again. "


BAD_FRAMES: list[str | bytes] = [
    "not json",
    "{broken",
    "[1, 2]",
    "42",
    '{"response_id": 5}',
    '{"interaction_type": 7}',
    '{"interaction_type": "dance"}',
    '{"interaction_type": "ping_pong"}',
    '{"interaction_type": "ping_pong", "timestamp": "soon"}',
    '{"interaction_type": "response_required", "response_id": "1", "transcript": []}',
    '{"interaction_type": "response_required", "response_id": -1, "transcript": []}',
    '{"interaction_type": "response_required", "response_id": 9, "transcript": "x"}',
    '{"interaction_type": "update_only", "transcript": [{"role": "user", "content": 5}]}',
    '{"interaction_type": "update_only", "transcript": [{"content": "no role"}]}',
    '{"interaction_type": "call_details", "call": "x"}',
    '{"interaction_type": "update_only", "transcript": [{"role": "user", "content": "'
    + "a" * 70_000
    + '"}]}',
    b"\x00\x01binary",
]


async def test_malformed_and_stale_frames_are_dropped_not_the_call(
    retell_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Hello there.")
    transcript = [
        utterance("system", "ignored role"),
        utterance("user", ""),
        utterance("user", "Hello"),
    ]
    call, _ = await connect(retell_gateway, "call_malformed")
    async with call:
        for frame in BAD_FRAMES:
            await call.send(frame)
        await call.send(required(5, transcript))
        frames = await response(call, 5)
        await call.send(required(4, transcript))  # stale: ignored
        await call.send({"interaction_type": "ping_pong", "timestamp": 7})
        pong = await call.recv()
    assert content(frames) == "Hello there. "
    assert pong == {"response_type": "ping_pong", "timestamp": 7}
    requests = fake_gemini.wait_for_requests(1)
    assert len(requests) == 1
    assert requests[0].turns == [("user", ["Hello"])]


async def test_reconnect_keeps_the_session_and_deletion_ends_the_call(
    retell_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("First answer.")
    call, opening = await connect(retell_gateway, "call_reconnect")
    async with call:
        await call.send(required(1, [utterance("user", "Hi")]))
        await response(call, 1)
    assert opening == [CONFIG, begin(WELCOME)]
    again, reopening = await connect(retell_gateway, "call_reconnect")
    async with again:
        assert reopening == [CONFIG, begin("")]  # no second welcome
        (session_id,) = await keyed_session_ids(retell_gateway, "retell")
        assert await delete_session(retell_gateway, session_id) == 204
        end = await again.recv_until(lambda f: f["response_type"] == "response")
        code = await again.close_code()
    assert end[-1]["end_call"] is True
    assert end[-1]["content_complete"] is True
    assert code == 1000


async def test_a_path_secret_guards_the_route(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    secret = "retell-path-secret-0123"
    gateway = start_gateway(
        GEMINI_API_KEY="k", GEMINI_BASE_URL=fake_gemini.url, RETELL_SECRET=secret
    )
    for path in ("/retell/call-1", "/retell/wrong-secret-000000/call-1"):
        with pytest.raises(InvalidStatus) as refused:
            await Client.connect(f"{gateway.ws_url}{path}")
        assert refused.value.response.status_code == 403
    async with await Client.connect(f"{gateway.ws_url}/retell/{secret}/call-1") as call:
        config = await call.recv()
    assert config["response_type"] == "config"
    assert fake_gemini.requests == []


async def test_out_of_range_ids_and_timestamps_are_dropped_not_the_call(
    retell_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    """A ``response_id`` of 2**64-1 once made every later id stale: the call went silent."""
    fake_gemini.reply("Still here.")
    transcript = [utterance("user", "Hello?")]
    call, _ = await connect(retell_gateway, "call_range")
    async with call:
        for huge in (2**64 - 1, 2**31):
            await call.send(
                json.dumps(orjson.loads(required(0, transcript)) | {"response_id": huge})
            )
        for timestamp in (2**70, -1):
            await call.send(json.dumps({"interaction_type": "ping_pong", "timestamp": timestamp}))
        await call.send(required(1, transcript))
        frames = await response(call, 1)
    assert content(frames) == "Still here. "
    assert len(fake_gemini.wait_for_requests(1)) == 1
