"""The OpenAI-compatible route under big requests: size and message-count caps, a
long history that must not stall other sessions, and retries that do not multiply."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest

from tests.adapters.http_helpers import start_on_gemini
from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import GatewayFactory

PATH = "/v1/chat/completions"


def long_chat(count: int) -> dict[str, Any]:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"}
        for i in range(count - 1)
    ]
    messages.append({"role": "user", "content": "and the last question?"})
    return {"model": "gpt-4o", "messages": messages, "stream": True}


async def worst_ping_while(client: Client, work: asyncio.Task[Any]) -> float:
    """Ping ``client``'s session until ``work`` is done; the slowest round trip."""
    worst = 0.0
    n = 0
    while not work.done():
        n += 1
        started = time.perf_counter()
        await client.send({"type": "ping", "id": n})
        pong = await client.recv()
        assert pong == {**pong, "type": "pong", "id": n}
        worst = max(worst, time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return worst


async def test_an_8000_message_request_does_not_stall_another_session(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    # Generous bound: an unbounded history stalled every session for seconds
    # (bench/context_bench.py has the figures).
    gateway = start_on_gemini(start_gateway, fake_gemini)
    async with await Client.connect(f"{gateway.ws_url}/ws") as other:
        await other.ready()
        async with httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http:
            request = asyncio.create_task(http.post(PATH, json=long_chat(8000)))
            worst = await worst_ping_while(other, request)
            response = await request
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    [sent] = fake_gemini.wait_for_requests(1)
    assert 1 < len(sent.contents) <= 200  # the model saw the newest part only
    assert (sent.last_user_text or "").endswith("and the last question?")
    assert worst < 1.0


async def test_retries_do_not_multiply_behind_a_platform_using_the_openai_sdk(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_gateway(
        GEMINI_API_KEY="k",
        GEMINI_BASE_URL=fake_gemini.url,
        GATEWAY_PROVIDER_RETRIES=2,
        GATEWAY_PROVIDER_BACKOFF_S=0,
    )
    for _ in range(9):
        fake_gemini.fail(500)
    # The platform's SDK with its default retries (2), as Vapi-like clients run it.
    platform = openai.AsyncOpenAI(api_key="k", base_url=f"{gateway.http_url}/v1", max_retries=2)
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            await platform.chat.completions.create(
                model="any", messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        await platform.close()

    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(fake_gemini.requests) == 3  # the gateway's own three tries, not nine


async def test_a_body_over_the_size_cap_is_413(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_on_gemini(start_gateway, fake_gemini, OPENAI_COMPAT_MAX_BODY_BYTES=4096)
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http:
        response = await http.post(PATH, json=long_chat(400))
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large"
    assert "OPENAI_COMPAT_MAX_BODY_BYTES" in error["message"]
    assert fake_gemini.requests == []


async def test_more_messages_than_the_cap_is_400(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_on_gemini(start_gateway, fake_gemini, OPENAI_COMPAT_MAX_MESSAGES=100)
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http:
        refused = await http.post(PATH, json=long_chat(101))
        served = await http.post(PATH, json={**long_chat(100), "stream": False})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "too_many_messages",
        "messages",
        "invalid_request_error",
    )
    assert "101" in error["message"]
    assert served.status_code == 200
    assert len(fake_gemini.requests) == 1


async def test_usage_is_streamed_when_asked_and_a_cut_reply_finishes_length(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_on_gemini(start_gateway, fake_gemini)
    fake_gemini.reply_events(
        [
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": "It was a dark and"}]},
                        "finishReason": "MAX_TOKENS",
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": 12,
                    "candidatesTokenCount": 5,
                    "totalTokenCount": 17,
                },
            }
        ]
    )
    platform = openai.AsyncOpenAI(api_key="k", base_url=f"{gateway.http_url}/v1", max_retries=0)
    try:
        stream = await platform.chat.completions.create(
            model="any",
            messages=[{"role": "user", "content": "tell me a story"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    finally:
        await platform.close()

    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 5, 17)


async def test_system_messages_over_the_instructions_budget_are_400(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_on_gemini(start_gateway, fake_gemini, GATEWAY_MAX_INSTRUCTIONS_CHARS=1000)
    user = {"role": "user", "content": "Hi"}
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http:
        refused = await http.post(
            PATH, json={"messages": [{"role": "system", "content": "x" * 1001}, user]}
        )
        served = await http.post(
            PATH,
            json={"stream": False, "messages": [{"role": "system", "content": "Be brief."}, user]},
        )
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("instructions_too_long", "messages")
    assert served.status_code == 200
    assert len(fake_gemini.requests) == 1  # the refused request never reached the model
