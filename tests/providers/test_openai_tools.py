"""The OpenAI-compatible provider's function calls, through the official SDK against
the fake OpenAI server: tools and tool_choice out, streamed tool_calls put together,
calls and results of the history sent back as OpenAI expects."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from gateway.core.history import Finish, FunctionCall, Message, ToolSpec, Usage
from gateway.providers.openai import OpenAIProvider
from tests.providers.test_openai import items_of, make_request, provider, user
from tests.support.fake_openai import FakeOpenAI, chunk, usage_chunk

__all__ = ["provider"]  # the fixture, imported

WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}},
)


def call_piece(
    index: int, *, id_: str | None = None, name: str | None = None, args: str = ""
) -> dict[str, Any]:
    piece: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if id_ is not None:
        piece["id"], piece["type"] = id_, "function"
        piece["function"]["name"] = name
    out = chunk()
    out["choices"][0]["delta"] = {"tool_calls": [piece]}
    return out


async def test_streamed_tool_calls_become_function_calls(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_raw(
        [
            chunk("Let me check. ", role="assistant"),
            call_piece(0, id_="call_a", name="get_weather"),
            call_piece(0, args='{"ci'),
            call_piece(0, args='ty": "Paris"}'),
            call_piece(1, id_="call_b", name="get_weather", args='{"city": "Rome"}'),
            chunk(finish_reason="tool_calls"),
            usage_chunk(10, 5),
        ]
    )
    request = dataclasses.replace(
        make_request(user("Paris and Rome?")), tools=(WEATHER,), tool_choice="required"
    )
    items = await items_of(provider, request)
    assert items == [
        "Let me check. ",
        FunctionCall("call_a", "get_weather", '{"city": "Paris"}'),
        FunctionCall("call_b", "get_weather", '{"city": "Rome"}'),
        Usage(input_tokens=10, output_tokens=5, total_tokens=15),
        Finish("stop", raw="tool_calls"),
    ]
    (sent,) = fake_openai.wait_for_requests(1)
    assert sent.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert sent.body["tool_choice"] == "required"


async def test_calls_and_results_in_the_history_are_sent_back(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply("It is sunny.")
    call = FunctionCall("call_a", "get_weather", '{"city":"Paris"}')
    request = dataclasses.replace(
        make_request(
            user("Paris?"),
            Message("assistant", "", calls=(call,)),
            Message("tool", '{"sky":"sunny"}', call_id="call_a", name="get_weather"),
        ),
        tools=(WEATHER,),
        tool_choice="get_weather",
    )
    items = await items_of(provider, request)
    assert "It is sunny." in "".join(i for i in items if isinstance(i, str))
    (sent,) = fake_openai.wait_for_requests(1)
    assert sent.roles == ["system", "user", "assistant", "tool"]
    assistant, tool = sent.messages[2], sent.messages[3]
    assert assistant["content"] is None
    assert assistant["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert tool == {"role": "tool", "tool_call_id": "call_a", "content": '{"sky":"sunny"}'}
    assert sent.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert orjson.loads(tool["content"]) == {"sky": "sunny"}
