"""A simulated Twilio ConversationRelay call against the real gateway on ``/twilio``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from websockets.exceptions import InvalidStatus

from gateway.adapters.twilio import FAILURE_TEXT
from tests.adapters.ws_helpers import (
    delete_session,
    keyed_session_ids,
    start_on_gemini,
    twilio_signature,
)
from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini, wait_event
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

SETUP: dict[str, Any] = {
    "type": "setup",
    "sessionId": "VX00000000000000000000000000000001",
    "accountSid": "AC00000000000000000000000000000001",
    "parentCallSid": "",
    "callSid": "CA00000000000000000000000000000001",
    "from": "+18005550100",
    "to": "+18005550101",
    "callType": "PSTN",
    "direction": "inbound",
    "callStatus": "RINGING",
    "customParameters": {"customerId": "42"},
}
TALK_END = {"type": "text", "token": "", "last": True}


@pytest.fixture
def gemini_gateway(start_gateway: GatewayFactory, fake_gemini: FakeGemini) -> RunningServer:
    """The gateway on the fake Gemini, cutting whole sentences so that tests can assert
    the tokens (test_chunking.py covers the route's default)."""
    return start_on_gemini(start_gateway, fake_gemini)


def prompt(text: str, *, last: bool = True) -> dict[str, Any]:
    return {"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": last}


async def talk(call: Client) -> list[dict[str, Any]]:
    """Frames up to the end of the talk cycle (``last: true``)."""
    return await call.recv_until(lambda f: f["type"] == "text" and f["last"])


def spoken(frames: list[dict[str, Any]]) -> str:
    return "".join(f["token"] for f in frames)


async def test_a_call_with_two_turns_keeps_history(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Hello Ada. How can I help you today?", chunk_size=5)
    fake_gemini.reply("You are Ada.", chunk_size=4)
    async with await Client.connect(f"{gemini_gateway.ws_url}/twilio") as call:
        await call.send(SETUP)
        await call.send(prompt("I am", last=False))  # a partial: no turn
        await call.send(prompt("I am Ada."))
        first = await talk(call)
        await call.send(prompt("Who am I?"))
        second = await talk(call)
    assert first[-1] == TALK_END
    assert all(f["type"] == "text" and f["last"] is False for f in first[:-1])
    assert len(first) >= 3
    assert spoken(first) == "Hello Ada. How can I help you today? "
    assert (spoken(second), second[-1]) == ("You are Ada. ", TALK_END)
    requests = fake_gemini.wait_for_requests(2)
    assert len(requests) == 2
    assert requests[0].turns == [("user", ["I am Ada."])]
    assert requests[1].turns == [
        ("user", ["I am Ada."]),
        ("model", ["Hello Ada. How can I help you today?"]),
        ("user", ["Who am I?"]),
    ]


async def test_interrupt_keeps_only_what_the_caller_heard(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    stalled = fake_gemini.stall(after_chunks=["One fish. Two fish. ", "Red fish. "])
    fake_gemini.reply("Okay.")
    async with await Client.connect(f"{gemini_gateway.ws_url}/twilio") as call:
        await call.send(SETUP)
        await call.send(prompt("Count fish"))
        head = await call.recv()
        await call.send(
            {
                "type": "interrupt",
                "utteranceUntilInterrupt": "One fish.",
                "durationUntilInterruptMs": "460",
            }
        )
        assert await wait_event(stalled.client_gone), "the interrupted stream was not closed"
        await call.send(prompt("And now?"))
        after = await talk(call)
    assert (head["type"], head["last"]) == ("text", False)
    # The interrupted talk cycle gets no end marker: the only last:true ends the new turn.
    assert [f for f in after if f["last"]] == [TALK_END]
    assert spoken(after).endswith("Okay. ")
    second = fake_gemini.wait_for_requests(2)[1]
    assert second.turns == [
        ("user", ["Count fish"]),
        ("model", ["One fish."]),
        ("user", ["And now?"]),
    ]


async def test_interrupt_after_the_reply_was_sent_truncates_it(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("First sentence here. Second sentence there.")
    fake_gemini.reply("Sure.")
    async with await Client.connect(f"{gemini_gateway.ws_url}/twilio") as call:
        await call.send(SETUP)
        await call.send(prompt("Talk to me"))
        await talk(call)
        await call.send(
            {
                "type": "interrupt",
                "utteranceUntilInterrupt": "First sentence here.",
                "durationUntilInterruptMs": 1200,
            }
        )
        await call.send(prompt("Go on"))
        await talk(call)
    assert fake_gemini.wait_for_requests(2)[1].turns == [
        ("user", ["Talk to me"]),
        ("model", ["First sentence here."]),
        ("user", ["Go on"]),
    ]


async def test_dtmf_reaches_the_model_as_a_note(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("You pressed five.")
    async with await Client.connect(f"{gemini_gateway.ws_url}/twilio") as call:
        await call.send(SETUP)
        await call.send({"type": "dtmf", "digit": "5"})
        frames = await talk(call)
    assert spoken(frames) == "You pressed five. "
    (request,) = fake_gemini.wait_for_requests(1)
    assert request.turns == [("user", ["(The caller pressed the key 5 on the phone keypad.)"])]


async def test_provider_failure_ends_the_talk_cycle_and_the_next_prompt_works(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.cut_after(["It starts well. ", "And then"])  # not retried: a chunk was sent
    fake_gemini.fail(400)  # not retryable
    fake_gemini.reply("All good now.")
    async with await Client.connect(f"{gemini_gateway.ws_url}/twilio") as call:
        await call.send(SETUP)
        await call.send(prompt("Hi"))
        cut = await talk(call)
        await call.send(prompt("Hello?"))
        refused = await talk(call)
        await call.send(prompt("Again"))
        ok = await talk(call)
    assert cut == [
        {"type": "text", "token": "It starts well. ", "last": False},
        {"type": "text", "token": FAILURE_TEXT, "last": True},
    ]
    assert refused == [{"type": "text", "token": FAILURE_TEXT, "last": True}]
    assert (spoken(ok), ok[-1]) == ("All good now. ", TALK_END)


BAD_FRAMES: list[str | bytes] = [
    "not json at all",
    "{broken json",
    "[1, 2]",
    '"a string"',
    '{"voicePrompt": "no type"}',
    '{"type": 5}',
    '{"type": "dance"}',
    '{"type": "prompt"}',
    '{"type": "prompt", "voicePrompt": 5}',
    '{"type": "prompt", "voicePrompt": "x", "last": "yes"}',
    '{"type": "prompt", "voicePrompt": "   "}',
    '{"type": "interrupt", "utteranceUntilInterrupt": ["x"]}',
    '{"type": "interrupt", "utteranceUntilInterrupt": "nothing playing"}',
    '{"type": "dtmf", "digit": "123456789"}',
    '{"type": "dtmf"}',
    '{"type": "prompt", "voicePrompt": "' + "a" * 70_000 + '"}',
    b"\x00\x01binary",
    '{"type": "info", "name": "tokensPlayed", "value": "Hello"}',
    '{"type": "error", "description": "Invalid message received: {}"}',
    orjson.dumps(SETUP).decode(),  # a second setup
]


async def test_frames_before_setup_and_malformed_frames_are_dropped_not_the_call(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Hello there.")
    async with await Client.connect(f"{gemini_gateway.ws_url}/twilio") as call:
        await call.send(prompt("Said before setup"))
        await call.send("not json before setup")
        await call.send(SETUP)
        for frame in BAD_FRAMES:
            await call.send(frame)
        await call.send(prompt("Hello"))
        frames = await talk(call)
    assert (spoken(frames), frames[-1]) == ("Hello there. ", TALK_END)
    requests = fake_gemini.wait_for_requests(1)
    assert len(requests) == 1
    assert requests[0].turns == [("user", ["Hello"])]


async def test_telnyx_setup_keys_the_session_by_call_control_id(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    setup = {
        "type": "setup",
        "sessionId": "7a7e6a4f-1d44-4f0c-b5d4-9f9bf3a5c1f2",
        "callControlId": "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ",
        "callSessionId": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        "callLegId": "428c31b6-7af4-4b6f-92e7-7a7e6a4f1d44",
        "customParameters": {"customer_id": "customer_123"},
    }
    fake_gemini.reply("Hi Bo.")
    fake_gemini.reply("Still Bo.")
    for text in ("I am Bo.", "Who am I?"):  # two relay sessions of the same call
        async with await Client.connect(f"{gemini_gateway.ws_url}/twilio") as call:
            await call.send(setup)
            await call.send({"type": "prompt", "voicePrompt": text, "lang": "en", "last": True})
            await talk(call)
    assert fake_gemini.wait_for_requests(2)[1].turns == [
        ("user", ["I am Bo."]),
        ("model", ["Hi Bo."]),
        ("user", ["Who am I?"]),
    ]
    assert len(await keyed_session_ids(gemini_gateway, "twilio")) == 1


async def test_deleting_the_session_ends_the_relay(offline_gateway: RunningServer) -> None:
    async with await Client.connect(f"{offline_gateway.ws_url}/twilio") as call:
        await call.send(SETUP)
        await call.send(prompt("Hello"))
        await talk(call)
        (session_id,) = await keyed_session_ids(offline_gateway, "twilio")
        assert await delete_session(offline_gateway, session_id) == 204
        end = await call.recv()
        code = await call.close_code()
    assert end["type"] == "end"
    handoff = orjson.loads(end["handoffData"])
    assert handoff == {
        "reasonCode": "session-ended",
        "reason": "the session was deleted",
        "sessionId": session_id,
    }
    assert code == 1000


async def test_signature_is_checked_against_the_public_url(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    token = "twilio-auth-token-for-tests"
    gateway = start_on_gemini(
        start_gateway,
        fake_gemini,
        TWILIO_AUTH_TOKEN=token,
        GATEWAY_PUBLIC_URL="https://voice.example.com",
    )
    url = f"{gateway.ws_url}/twilio?tenant=acme"
    good = twilio_signature(token, "wss://voice.example.com/twilio?tenant=acme")
    fake_gemini.reply("Signed and sound.")
    headers = {"X-Twilio-Signature": good}
    async with await Client.connect(url, additional_headers=headers) as call:
        await call.send(SETUP)
        await call.send(prompt("Hello"))
        assert spoken(await talk(call)) == "Signed and sound. "

    refused = {
        "wrong token": twilio_signature(
            "another-token", "wss://voice.example.com/twilio?tenant=acme"
        ),
        "other query": twilio_signature(token, "wss://voice.example.com/twilio?tenant=evil"),
        "local host": twilio_signature(token, f"wss://{gateway.host}:{gateway.port}/twilio"),
        "garbage": "not-a-signature",
    }
    for name, signature in refused.items():
        with pytest.raises(InvalidStatus) as caught:
            await Client.connect(url, additional_headers={"X-Twilio-Signature": signature})
        assert caught.value.response.status_code == 403, name
    with pytest.raises(InvalidStatus) as caught:
        await Client.connect(url)
    assert caught.value.response.status_code == 403


async def test_signature_without_a_public_url_uses_the_host_header(
    start_gateway: GatewayFactory,
) -> None:
    token = "twilio-auth-token-for-tests"
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, TWILIO_AUTH_TOKEN=token)
    signed = twilio_signature(token, f"wss://{gateway.host}:{gateway.port}/twilio")
    headers = {"X-Twilio-Signature": signed}
    async with await Client.connect(f"{gateway.ws_url}/twilio", additional_headers=headers) as call:
        await call.send(SETUP)
        await call.send(prompt("Hello"))
        assert (await talk(call))[-1] == TALK_END
    with pytest.raises(InvalidStatus) as caught:
        await Client.connect(
            f"{gateway.ws_url}/twilio",
            additional_headers={"X-Twilio-Signature": twilio_signature(token, "wss://x/twilio")},
        )
    assert caught.value.response.status_code == 403
