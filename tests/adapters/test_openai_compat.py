"""OpenAI-compatible custom-LLM simulator (what Vapi, ElevenLabs and Deepgram send),
over real HTTP to the real gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.adapters.http_helpers import (
    INSTRUCTIONS,
    SseReader,
    http_client,
    read_sse,
    start_on_gemini,
)
from tests.support.fake_gemini import FakeGemini, wait_event
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

PATH = "/v1/chat/completions"


@pytest.fixture
def gateway(start_gateway: GatewayFactory, fake_gemini: FakeGemini) -> RunningServer:
    return start_on_gemini(start_gateway, fake_gemini)


def request(*messages: tuple[str, Any], stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [{"role": role, "content": content} for role, content in messages],
        "stream": stream,
        **extra,
    }


def contents(events: list[Any]) -> list[str]:
    return [e["choices"][0]["delta"]["content"] for e in events[1:-2]]


def assert_error(body: dict[str, Any], type_: str, code: str | None = None) -> dict[str, Any]:
    error = body["error"]
    assert {"message", "type", "param", "code"} <= error.keys()
    assert error["type"] == type_
    if code is not None:
        assert error["code"] == code
    return dict(error)


async def test_streamed_completion_sends_whole_sentences(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Hello there. How are you today? I am fine, thanks.", chunk_size=5)
    async with http_client(gateway.http_url) as client:
        status, events = await read_sse(
            client, PATH, json=request(("user", "Hi"), stream=True, call={"id": "vapi-call"})
        )
    assert status == 200
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {"gemini-test"}
    assert len({c["created"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert contents(events) == ["Hello there. ", "How are you today? ", "I am fine, thanks. "]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + [
        "stop"
    ]
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert fake_gemini.requests[0].turns == [("user", ["Hi"])]


async def test_non_streamed_completion(gateway: RunningServer, fake_gemini: FakeGemini) -> None:
    fake_gemini.reply("Hello there. How are you?", chunk_size=4)
    async with http_client(gateway.http_url) as client:
        response = await client.post(PATH, json=request(("user", "Hi")))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gemini-test"
    (choice,) = body["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Hello there. How are you?",
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"
    # The fake Gemini counts one prompt and one candidate token: the provider's own counts.
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}


async def test_system_messages_and_history_reach_the_model(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Arr, your name be Ada.")
    body = request(
        ("system", "You are a pirate."),
        ("user", [{"type": "text", "text": "I am "}, {"type": "text", "text": "Ada."}]),
        ("assistant", "Ahoy Ada."),
        ("tool", "ignored tool output"),
        ("developer", "Keep it short."),
        ("assistant", None),
        (
            "user",
            [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "Who?"}],
        ),
        stream=True,
        temperature=0.3,
        metadata={"vapi": True},
    )
    async with http_client(gateway.http_url) as client:
        status, events = await read_sse(client, PATH, json=body)
    assert status == 200
    assert contents(events) == ["Arr, your name be Ada. "]
    sent = fake_gemini.requests[0]
    assert sent.turns == [("user", ["I am Ada."]), ("model", ["Ahoy Ada."]), ("user", ["Who?"])]
    assert sent.system_text is not None
    assert sent.system_text.startswith(INSTRUCTIONS)
    assert "You are a pirate.\n\nKeep it short." in sent.system_text


async def test_requests_are_stateless(gateway: RunningServer, fake_gemini: FakeGemini) -> None:
    fake_gemini.reply("One.")
    fake_gemini.reply("Two.")
    async with http_client(gateway.http_url) as client:
        await client.post(PATH, json=request(("user", "First")))
        await client.post(PATH, json=request(("user", "Second")))
    assert [r.turns for r in fake_gemini.requests] == [
        [("user", ["First"])],
        [("user", ["Second"])],
    ]


async def test_bearer_key_is_required_when_configured(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_on_gemini(start_gateway, fake_gemini, OPENAI_COMPAT_API_KEYS="key-one, key-two")
    fake_gemini.reply("Welcome in.")
    body = request(("user", "Hi"))
    async with http_client(gateway.http_url) as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "key-two"}):
            refused = await client.post(PATH, json=body, headers=headers)
            assert refused.status_code == 401, headers
            assert_error(refused.json(), "invalid_request_error", "invalid_api_key")
        accepted = await client.post(PATH, json=body, headers={"authorization": "Bearer key-two"})
    assert accepted.status_code == 200
    assert accepted.json()["choices"][0]["message"]["content"] == "Welcome in."
    assert len(fake_gemini.requests) == 1


async def test_bad_requests_get_openai_style_400s(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    cases: list[tuple[bytes, str | None, str]] = [
        (b"{nope", None, "not valid JSON"),
        (b'"text"', None, "JSON object"),
        (orjson.dumps({"model": "m"}), "messages", "Field required"),
        (orjson.dumps({"messages": []}), "messages", "at least 1"),
        (orjson.dumps(request(("user", "Hi"), ("assistant", "Hello"))), "messages", "last"),
        (orjson.dumps(request(("user", "  "))), "messages", "no text"),
        (orjson.dumps(request(("wizard", "Hi"))), "messages[0].role", "role"),
        (orjson.dumps(request(("user", "x" * 5000))), "messages", "longer than"),
    ]
    async with http_client(gateway.http_url) as client:
        for body, param, problem in cases:
            response = await client.post(PATH, content=body)
            assert response.status_code == 400, body
            error = assert_error(response.json(), "invalid_request_error")
            assert error["param"] == param, body
            assert problem in error["message"], (body, error)
    assert fake_gemini.requests == []


async def test_provider_failure_is_a_502_streamed_or_not(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.fail(503)
    fake_gemini.fail(503)
    fake_gemini.reply("Back again.")
    async with http_client(gateway.http_url) as client:
        whole = await client.post(PATH, json=request(("user", "Hi")))
        status, streamed = await read_sse(client, PATH, json=request(("user", "Hi"), stream=True))
        _, after = await read_sse(client, PATH, json=request(("user", "Hi"), stream=True))
    assert whole.status_code == 502
    error = assert_error(whole.json(), "server_error", "unavailable")
    assert error["retryable"] is True
    assert status == 502
    assert streamed[0]["error"] == error
    assert contents(after) == ["Back again. "]


async def test_a_failure_mid_stream_still_ends_the_stream(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.cut_after(["First sentence. ", "Second"])
    async with http_client(gateway.http_url) as client:
        status, events = await read_sse(client, PATH, json=request(("user", "Hi"), stream=True))
    assert status == 200
    assert contents(events) == ["First sentence. "]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1] == "[DONE]"


async def test_a_client_leaving_mid_stream_closes_the_provider_stream(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    stalled = fake_gemini.stall(after_chunks=["Hello there. ", "And"])
    fake_gemini.reply("Still here.")
    body = orjson.dumps(request(("user", "Talk to me"), stream=True))
    async with http_client(gateway.http_url) as client:
        async with client.stream("POST", PATH, content=body) as response:
            reader = SseReader(response)
            role = await reader.next()
            first = await reader.next()
        assert role["choices"][0]["delta"]["role"] == "assistant"
        assert first["choices"][0]["delta"]["content"] == "Hello there. "
        assert await wait_event(stalled.client_gone), "the Gemini stream was not closed"
        after = await client.post(PATH, json=request(("user", "Still there?")))
    assert after.json()["choices"][0]["message"]["content"] == "Still here."


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_a_client_leaving_before_any_text_closes_the_provider_stream(
    gateway: RunningServer, fake_gemini: FakeGemini, stream: bool
) -> None:
    stalled = fake_gemini.stall()
    async with http_client(gateway.http_url) as client:
        waiting = asyncio.create_task(
            client.post(PATH, json=request(("user", "Hello?"), stream=stream))
        )
        assert await wait_event(stalled.started)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert await wait_event(stalled.client_gone), "the Gemini stream was not closed"
