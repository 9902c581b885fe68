"""Tools on /v1/chat/completions, driven by the official ``openai`` SDK: the model's
calls stream as ``tool_calls`` deltas (``finish_reason: "tool_calls"``), every
chunk validated against the SDK's own types, and the results come back as
``tool`` messages in the next request."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.adapters.http_helpers import start_on_gemini
from tests.support.fake_gemini import FakeGemini, call_part, function_call_event
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def gateway(start_gateway: GatewayFactory, fake_gemini: FakeGemini) -> RunningServer:
    return start_on_gemini(start_gateway, fake_gemini, GATEWAY_CALL_CONTROL="end_call")


def client(gateway: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.http_url}/v1", api_key="unused", max_retries=0)


async def chunks(gateway: RunningServer, **kwargs: Any) -> list[ChatCompletionChunk]:
    """Every chunk of a streamed completion, each validated with the SDK's types."""
    async with client(gateway) as sdk:
        stream = await sdk.chat.completions.create(model="gpt-4o", stream=True, **kwargs)
        return [ChatCompletionChunk.model_validate(c.to_dict()) async for c in stream]


async def test_a_call_streams_as_tool_calls_and_the_sdk_assembles_it(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_events(
        [
            function_call_event(
                "get_weather",
                {"city": "Paris"},
                text="Let me check.",
                more=[call_part("get_weather", {"city": "Rome"})],
            )
        ]
    )
    got = await chunks(
        gateway,
        messages=[{"role": "user", "content": "Weather in Paris and Rome?"}],
        tools=[WEATHER],
        stream_options={"include_usage": True},
    )
    deltas = [c.choices[0].delta for c in got if c.choices]
    assert deltas[0].role == "assistant"
    calls = [tc for d in deltas for tc in d.tool_calls or []]
    heads = [tc for tc in calls if tc.id is not None]
    assert [(tc.index, tc.function and tc.function.name) for tc in heads] == [
        (0, "get_weather"),
        (1, "get_weather"),
    ]
    finishes = [c.choices[0].finish_reason for c in got if c.choices]
    assert finishes[-1] == "tool_calls"
    assert all(f is None for f in finishes[:-1])
    assert got[-1].choices == []
    assert got[-1].usage is not None

    # The SDK's own accumulator rebuilds the calls from the deltas.
    fake_gemini.reply_events([function_call_event("get_weather", {"city": "Oslo"})])
    async with (
        client(gateway) as sdk,
        sdk.chat.completions.stream(
            model="gpt-4o",
            messages=[{"role": "user", "content": "And Oslo?"}],
            tools=[WEATHER],
        ) as stream,
    ):
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    (choice,) = final.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    request = fake_gemini.wait_for_requests(2)[1]
    declared = request.body["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declared] == ["end_call", "get_weather"]


async def test_tool_results_in_the_history_reach_the_model_and_it_answers(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("It is 21 degrees and sunny in Paris.")
    async with client(gateway) as sdk:
        reply = await sdk.chat.completions.create(
            model="gpt-4o",
            tools=[WEATHER],
            tool_choice="auto",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_abc",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp_c": 21}'},
            ],
        )
    ChatCompletion.model_validate(reply.to_dict())
    assert reply.choices[0].finish_reason == "stop"
    assert "21 degrees" in (reply.choices[0].message.content or "")
    assert reply.usage is not None
    (request,) = fake_gemini.wait_for_requests(1)
    parts = [p for c in request.contents for p in c["parts"]]
    assert {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}} in parts
    assert {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}} in parts


async def test_tool_choice_and_call_control_as_an_ordinary_tool_call(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_events([function_call_event("end_call", {"reason": "done"}, text="Bye!")])
    async with client(gateway) as sdk:
        reply = await sdk.chat.completions.create(
            model="gpt-4o",
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            messages=[{"role": "user", "content": "Bye"}],
        )
    ChatCompletion.model_validate(reply.to_dict())
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "end_call",
        {"reason": "done"},
    )
    (request,) = fake_gemini.wait_for_requests(1)
    config = request.body["toolConfig"]["functionCallingConfig"]
    assert config["mode"] == "ANY"
    assert config["allowedFunctionNames"] == ["get_weather"]


async def test_a_system_only_request_is_answered_the_assistant_speaks_first(
    gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Hello, thanks for calling Acme. How can I help?")
    got = await chunks(gateway, messages=[{"role": "system", "content": "Greet the caller."}])
    text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
    assert text.startswith("Hello, thanks for calling Acme.")
    assert got[-1].choices[0].finish_reason == "stop"


async def test_a_bad_tool_schema_is_a_400_naming_the_tool(gateway: RunningServer) -> None:
    bad = {"type": "function", "function": {"name": "w", "parameters": {"type": "nope"}}}
    async with client(gateway) as sdk:
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(
                model="gpt-4o", tools=[bad], messages=[{"role": "user", "content": "Hi"}]
            )
    assert "'w'" in caught.value.message
    assert caught.value.code == "invalid_tool"
