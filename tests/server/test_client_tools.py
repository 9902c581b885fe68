"""Client-executed tools on /ws: a real gateway on the real google-genai SDK against
the fake Gemini returning ``functionCall`` parts."""

from __future__ import annotations

from typing import Any

from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini, call_part, function_call_event
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def gemini(start_gateway: GatewayFactory, fake: FakeGemini, **env: Any) -> RunningServer:
    return start_gateway(GEMINI_API_KEY="k", GEMINI_BASE_URL=fake.url, **env)


async def declare(client: Client) -> dict[str, Any]:
    await client.ready()
    await client.send({"type": "session.update", "tools": [WEATHER]})
    (updated,) = await client.recv_type("session.updated")
    return updated


def parts(request_contents: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [p[key] for c in request_contents for p in c.get("parts", []) if key in p]


async def test_the_model_calls_a_client_tool_and_the_reply_continues_in_the_same_turn(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini)
    fake_gemini.reply_events(
        [
            function_call_event(
                "get_weather", {"city": "Paris"}, text="Let me look that up.", signature="c2ln"
            )
        ]
    )
    fake_gemini.reply("It is 21 degrees and sunny in Paris.")
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        updated = await declare(client)
        assert updated["tools"] == ["get_weather"]
        await client.send({"type": "user.message", "text": "What's the weather in Paris?"})
        before = await client.recv_type("response.function_call")
        call = before[-1]
        await client.send(
            {"type": "function.result", "call_id": call["call_id"], "output": {"temp_c": 21}}
        )
        after = await client.turn()

    events = before + after
    assert [e["type"] for e in events].count("response.start") == 1
    assert (call["name"], call["arguments"]) == ("get_weather", {"city": "Paris"})
    assert call["turn_id"] == events[0]["turn_id"] == after[-1]["turn_id"]
    spoken = [e["text"] for e in events if e["type"] == "response.tts"]
    assert spoken[0] == "Let me look that up."
    assert "21 degrees" in " ".join(spoken[1:])
    end = after[-1]
    assert end["status"] == "completed"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    first, second = fake_gemini.wait_for_requests(2)
    (declared,) = first.body["tools"]
    (decl,) = declared["functionDeclarations"]
    assert decl["name"] == "get_weather"
    # The SDK sends the proto field name; the API takes either spelling.
    schema = decl.get("parametersJsonSchema", decl.get("parameters_json_schema"))
    assert schema == WEATHER["parameters"]
    (sent_call,) = parts(second.contents, "functionCall")
    assert sent_call == {"name": "get_weather", "args": {"city": "Paris"}}
    signed = [p for c in second.contents for p in c["parts"] if "functionCall" in p]
    assert signed[0]["thoughtSignature"] == "c2ln"
    (response,) = parts(second.contents, "functionResponse")
    assert response == {"name": "get_weather", "response": {"temp_c": 21}}


async def test_parallel_calls_unknown_results_and_the_next_turn_history(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini)
    fake_gemini.reply_events(
        [
            function_call_event(
                "get_weather", {"city": "Paris"}, more=[call_part("get_weather", {"city": "Rome"})]
            )
        ]
    )
    fake_gemini.reply("Paris is rainy, Rome is sunny.")
    fake_gemini.reply("You're welcome.")
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await declare(client)
        await client.send("Paris and Rome?")
        first = (await client.recv_type("response.function_call"))[-1]
        second = await client.recv()
        assert second["type"] == "response.function_call"
        assert first["call_id"] != second["call_id"]
        await client.send({"type": "function.result", "call_id": "made-up", "output": 1})
        (error,) = await client.recv_type("error")
        assert error["code"] == "unknown_call"
        await client.send(
            {"type": "function.result", "call_id": second["call_id"], "output": "sunny"}
        )
        await client.send(
            {"type": "function.result", "call_id": first["call_id"], "output": "rain"}
        )
        turn = await client.turn()
        assert turn[-1]["status"] == "completed"
        await client.send("Thanks!")
        await client.turn()

    _, continuation, later = fake_gemini.wait_for_requests(3)
    responses = parts(continuation.contents, "functionResponse")
    assert [r["response"] for r in responses] == [{"output": "rain"}, {"output": "sunny"}]
    # The next turn's request still carries the calls and their results.
    assert len(parts(later.contents, "functionCall")) == 2
    assert len(parts(later.contents, "functionResponse")) == 2


async def test_a_result_that_never_comes_fails_the_turn_with_tool_timeout(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini, GATEWAY_TOOL_TIMEOUT_S=0.3)
    fake_gemini.reply_events([function_call_event("get_weather", {"city": "Oslo"})])
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await declare(client)
        await client.send("Oslo?")
        events = await client.turn()
    error = next(e for e in events if e["type"] == "error")
    assert error["code"] == "tool_timeout"
    assert (events[-1]["status"], events[-1]["reason"]) == ("failed", "tool_timeout")


async def test_resume_while_a_call_is_pending_replays_it_and_the_turn_goes_on(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini)
    fake_gemini.reply_events([function_call_event("get_weather", {"city": "Lima"})])
    fake_gemini.reply("Lima is cloudy.")
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        ready = await client.ready()
        await client.send({"type": "session.update", "tools": [WEATHER]})
        updated = (await client.recv_type("session.updated"))[-1]
        await client.send("Lima?")
        call = (await client.recv_type("response.function_call"))[-1]
    url = (
        f"{gateway.ws_url}/ws?session_id={ready['session_id']}"
        f"&resume_token={ready['resume_token']}&last_seq={updated['seq']}"
    )
    async with await Client.connect(url) as again:
        assert (await again.ready())["resumed"] is True
        replayed = await again.recv_type("response.function_call")
        assert replayed[-1] == call
        await again.send(
            {"type": "function.result", "call_id": call["call_id"], "output": "cloudy"}
        )
        turn = await again.turn()
    assert turn[-1]["status"] == "completed"
    assert "cloudy" in turn[-1]["text"]


async def test_an_interrupt_while_a_call_is_pending_ends_the_turn(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini)
    fake_gemini.reply_events([function_call_event("get_weather", {"city": "Kyiv"})])
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await declare(client)
        await client.send("Kyiv?")
        call = (await client.recv_type("response.function_call"))[-1]
        await client.send({"type": "interrupt"})
        turn = await client.turn()
        assert turn[-1]["status"] == "interrupted"
        await client.send({"type": "function.result", "call_id": call["call_id"], "output": 1})
        (error,) = await client.recv_type("error")
    assert error["code"] == "unknown_call"


async def test_a_bad_tool_schema_is_refused_naming_the_tool(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        bad = {"name": "get_weather", "parameters": {"type": "object", "required": "city"}}
        await client.send({"type": "session.update", "tools": [bad]})
        error = await client.recv()
    assert error["type"] == "error"
    assert error["code"] == "invalid_tool"
    assert "get_weather" in error["message"]
    assert "required" in error["message"]


async def test_end_call_on_ws_is_a_call_control_event_before_the_end(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini, GATEWAY_CALL_CONTROL="end_call,send_digits")
    fake_gemini.reply_events(
        [function_call_event("end_call", {"reason": "the caller is done"}, text="Goodbye!")]
    )
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("That's all, bye.")
        events = await client.turn()
    assert [e["type"] for e in events] == [
        "response.start",
        "response.tts",
        "response.call_control",
        "response.end",
    ]
    control = events[2]
    assert (control["action"], control["reason"], control["to"]) == (
        "end_call",
        "the caller is done",
        None,
    )
    assert events[-1]["status"] == "completed"
    assert len(fake_gemini.requests) == 1  # call control alone does not go back to the model
