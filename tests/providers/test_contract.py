"""The contract every provider keeps (see gateway/providers/base.py), run against each
one: the offline provider, and Gemini and OpenAI through their real SDKs and fakes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.core.history import (
    Finish,
    FunctionCall,
    GenerationRequest,
    Message,
    ToolSpec,
    Usage,
)
from gateway.providers.base import LLMProvider
from gateway.providers.gemini import GeminiProvider
from gateway.providers.offline import OfflineProvider
from gateway.providers.openai import OpenAIProvider
from tests.support.fake_gemini import FakeGemini, function_call_event, wait_event
from tests.support.fake_openai import FakeOpenAI, chunk

REQUEST = GenerationRequest(
    session_id="s",
    turn_id="t1",
    system_instruction="Be brief.",
    messages=(Message("user", "Hello"),),
)


@dataclass
class Subject:
    provider: LLMProvider
    #: Script a reply of these pieces (no-op for the offline provider).
    reply: Callable[[list[str]], None]
    #: Script a stream that sends these pieces then stalls; returns a wait for the
    #: server to see the client leave (``None`` for the offline provider).
    stall: Callable[[list[str]], Callable[[], Awaitable[bool]]] | None
    #: Script a reply of some text then a call of ``name`` with ``args`` (``None``:
    #: the provider never calls functions).
    call: Callable[[str, dict[str, Any]], None] | None = None


@pytest.fixture(params=["offline", "gemini", "openai"])
async def subject(
    request: pytest.FixtureRequest, fake_gemini: FakeGemini, fake_openai: FakeOpenAI
) -> AsyncIterator[Subject]:
    if request.param == "offline":
        yield Subject(OfflineProvider(token_delay_s=0.001), lambda pieces: None, None)
        return
    if request.param == "gemini":
        gemini = GeminiProvider(api_key="k", model="gemini-x", base_url=fake_gemini.url)

        def gemini_reply(pieces: list[str]) -> None:
            fake_gemini.reply_chunks(pieces)

        def gemini_stall(pieces: list[str]) -> Callable[[], Awaitable[bool]]:
            script = fake_gemini.stall(after_chunks=pieces)
            return lambda: wait_event(script.client_gone)

        def gemini_call(name: str, args: dict[str, Any]) -> None:
            fake_gemini.reply_events([function_call_event(name, args, text="Checking. ")])

        try:
            yield Subject(gemini, gemini_reply, gemini_stall, gemini_call)
        finally:
            await gemini.aclose()
        return
    compatible = OpenAIProvider(api_key="k", model="m", base_url=fake_openai.url)

    def openai_reply(pieces: list[str]) -> None:
        fake_openai.reply(pieces, usage=(5, 3))

    def openai_stall(pieces: list[str]) -> Callable[[], Awaitable[bool]]:
        script = fake_openai.stall(after=pieces)
        return lambda: wait_event(script.client_gone)

    def openai_call(name: str, args: dict[str, Any]) -> None:
        head = chunk("Checking. ", role="assistant")
        called = chunk()
        called["choices"][0]["delta"] = {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
            ]
        }
        fake_openai.reply_raw([head, called, chunk(finish_reason="tool_calls")])

    try:
        yield Subject(compatible, openai_reply, openai_stall, openai_call)
    finally:
        await compatible.aclose()


async def test_text_comes_first_then_usage_then_at_most_one_finish_last(subject: Subject) -> None:
    subject.reply(["Hello ", "there."])

    items = [item async for item in subject.provider.stream(REQUEST)]

    kinds = ["text" if isinstance(i, str) else type(i).__name__ for i in items]
    assert kinds[0] == "text"
    assert kinds == sorted(kinds, key=["text", "Usage", "Finish"].index)
    assert kinds.count("Finish") <= 1
    assert kinds.count("Usage") <= 1
    assert "".join(i for i in items if isinstance(i, str)).strip()
    finish = [i for i in items if isinstance(i, Finish)]
    assert all(f.reason == "stop" for f in finish)
    usage = [i for i in items if isinstance(i, Usage)]
    assert all(u.total_tokens >= u.input_tokens + u.output_tokens > 0 for u in usage)


async def test_names_are_stable(subject: Subject) -> None:
    assert subject.provider.name in ("offline", "gemini", "openai")
    assert subject.provider.model


async def test_cancelling_the_consumer_closes_the_stream(subject: Subject) -> None:
    gone = subject.stall(["One ", "two"]) if subject.stall is not None else None
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in subject.provider.stream(REQUEST):
            got_first.set()

    task = asyncio.create_task(consume())
    await got_first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if gone is not None:
        assert await gone()

    subject.reply(["Still ", "here."])
    again = [i async for i in subject.provider.stream(REQUEST) if isinstance(i, str)]
    assert "".join(again).strip()


async def test_a_function_call_is_one_item_after_the_text_and_a_normal_finish(
    subject: Subject,
) -> None:
    if subject.call is None:
        pytest.skip("this provider never calls functions")
    subject.call("get_weather", {"city": "Paris"})
    request = dataclasses.replace(REQUEST, tools=(ToolSpec("get_weather"),))

    items = [item async for item in subject.provider.stream(request)]

    calls = [i for i in items if isinstance(i, FunctionCall)]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    kinds = ["text" if isinstance(i, str) else type(i).__name__ for i in items]
    assert kinds == sorted(kinds, key=["text", "FunctionCall", "Usage", "Finish"].index)
    assert all(f.reason == "stop" for f in items if isinstance(f, Finish))
