"""Provider faults against a misbehaving fake Gemini: retries only before the first
chunk was sent, timeouts, and a session that stays usable."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini, wait_event
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer


def gemini(start_gateway: GatewayFactory, fake: FakeGemini, **env: Any) -> RunningServer:
    env = {"GATEWAY_PROVIDER_BACKOFF_S": 0, **env}
    return start_gateway(GEMINI_API_KEY="k", GEMINI_BASE_URL=fake.url, **env)


async def one_turn(gateway: RunningServer, text: str = "Hi") -> list[dict[str, Any]]:
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send(text)
        events = await client.turn()
        await client.send("And now?")
        after = await client.turn()
    assert after[-1]["status"] == "completed", "the session must stay usable"
    return events


@pytest.mark.parametrize("statuses", [[429], [500, 503]], ids=["429", "500-503"])
async def test_retryable_errors_before_any_chunk_are_retried(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini, statuses: list[int]
) -> None:
    gateway = gemini(start_gateway, fake_gemini, GATEWAY_PROVIDER_RETRIES=2)
    for status in statuses:
        fake_gemini.fail(status)
    fake_gemini.reply("Third time lucky.")
    events = await one_turn(gateway)
    assert events[-1]["status"] == "completed"
    assert events[-1]["text"] == "Third time lucky."
    assert not [e for e in events if e["type"] == "error"]
    assert len(fake_gemini.requests) == len(statuses) + 2


async def test_retries_run_out_and_the_turn_fails_retryable(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini, GATEWAY_PROVIDER_RETRIES=2)
    for _ in range(3):
        fake_gemini.fail(503)
    events = await one_turn(gateway)
    (error,) = [e for e in events if e["type"] == "error"]
    assert (error["detail"], error["retryable"]) == ("unavailable", True)
    assert events[-1]["status"] == "failed"
    assert len(fake_gemini.requests) == 4  # three tries, then the next turn


async def test_a_stall_before_the_first_token_times_out(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(
        start_gateway, fake_gemini, GATEWAY_PROVIDER_RETRIES=0, GATEWAY_FIRST_TOKEN_TIMEOUT_S=0.3
    )
    stalled = fake_gemini.stall()
    events = await one_turn(gateway)
    (error,) = [e for e in events if e["type"] == "error"]
    assert (error["detail"], error["retryable"]) == ("timeout", True)
    assert "first text" in error["message"]
    assert events[-1]["status"] == "failed"
    assert await wait_event(stalled.client_gone), "the stalled stream was not closed"


async def test_a_stall_mid_stream_fails_keeping_what_was_sent_without_retry(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(
        start_gateway, fake_gemini, GATEWAY_PROVIDER_RETRIES=2, GATEWAY_TOKEN_TIMEOUT_S=0.3
    )
    stalled = fake_gemini.stall(after_chunks=["First sentence. ", "Second"])
    events = await one_turn(gateway)
    assert [e["text"] for e in events if e["type"] == "response.tts"] == ["First sentence."]
    assert (events[-1]["status"], events[-1]["spoken_text"]) == ("failed", "First sentence.")
    assert await wait_event(stalled.client_gone)
    assert len(fake_gemini.requests) == 2  # no retry once a chunk was sent


async def test_a_cut_before_the_first_chunk_is_retried(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini, GATEWAY_PROVIDER_RETRIES=1)
    fake_gemini.cut_after(["Half a sent"])
    fake_gemini.reply("A whole sentence.")
    events = await one_turn(gateway)
    assert [e["text"] for e in events if e["type"] == "response.tts"] == ["A whole sentence."]
    assert events[-1]["text"] == "A whole sentence."


async def test_a_cut_after_a_chunk_fails_the_turn(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini, GATEWAY_PROVIDER_RETRIES=2)
    fake_gemini.cut_after(["Said once. ", "Then"])
    events = await one_turn(gateway)
    (error,) = [e for e in events if e["type"] == "error"]
    assert (error["detail"], error["retryable"]) == ("connection_lost", True)
    assert events[-1]["spoken_text"] == "Said once."
    assert len(fake_gemini.requests) == 2


async def test_malformed_sse_is_not_retried(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini, GATEWAY_PROVIDER_RETRIES=2)
    fake_gemini.malformed()
    events = await one_turn(gateway)
    (error,) = [e for e in events if e["type"] == "error"]
    assert (error["detail"], error["retryable"]) == ("bad_response", False)
    assert len(fake_gemini.requests) == 2
