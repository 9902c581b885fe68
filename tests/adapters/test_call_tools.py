"""Tools on the phone platforms: a weather lookup by signed webhook, then the model
hangs up (Twilio, Retell) or transfers the call (Retell), played from the
platforms' documented frames against the real gateway on the fake Gemini."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from tests.adapters.http_helpers import http_client
from tests.adapters.test_layercode import message, webhook
from tests.adapters.test_retell import connect, required, response, utterance
from tests.adapters.test_twilio import SETUP, TALK_END, prompt, spoken, talk
from tests.adapters.ws_helpers import start_on_gemini
from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini, function_call_event
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer
from tests.support.webhooks import WebhookServer

SECRET = "webhook-secret"


def gateway_with_tools(
    start_gateway: GatewayFactory, fake: FakeGemini, webhooks: WebhookServer, tmp_path: Path
) -> RunningServer:
    tools_file = tmp_path / "tools.yaml"
    tools_file.write_text(
        "# The weather service runs on this machine: loopback must be allowed.\n"
        "allow_private_addresses: true\n"
        "tools:\n"
        "  - name: get_weather\n"
        "    description: The current weather in a city.\n"
        "    parameters:\n"
        "      type: object\n"
        "      properties: {city: {type: string}}\n"
        "      required: [city]\n"
        f"    url: {webhooks.url('/weather')}\n"
        "    timeout_s: 5\n",
        encoding="utf-8",
    )
    return start_on_gemini(
        start_gateway,
        fake,
        GATEWAY_TOOLS_FILE=str(tools_file),
        GATEWAY_TOOLS_SECRET=SECRET,
        GATEWAY_CALL_CONTROL="end_call,transfer_call,send_digits",
    )


def script_weather_then_goodbye(fake: FakeGemini, goodbye_call: dict[str, Any]) -> None:
    fake.reply_events([function_call_event("get_weather", {"city": "Paris"})])
    fake.reply("It is 21 degrees and sunny in Paris.")
    fake.reply_events([goodbye_call])


def declared(fake: FakeGemini) -> list[str]:
    first = fake.wait_for_requests(1)[0]
    return [d["name"] for d in first.body["tools"][0]["functionDeclarations"]]


async def test_twilio_weather_by_webhook_then_end_call_after_the_goodbye(
    start_gateway: GatewayFactory,
    fake_gemini: FakeGemini,
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    gateway = gateway_with_tools(start_gateway, fake_gemini, webhooks, tmp_path)
    goodbye = "Thanks for calling, have a lovely day. Goodbye!"
    script_weather_then_goodbye(
        fake_gemini, function_call_event("end_call", {"reason": "done"}, text=goodbye)
    )
    async with await Client.connect(f"{gateway.ws_url}/twilio") as call:
        await call.send(SETUP)
        await call.send(prompt("What's the weather in Paris?"))
        weather = await talk(call)
        await call.send(prompt("That's all, thanks."))
        farewell = await talk(call)
        talk_ended = time.monotonic()
        end = await call.recv()
        waited = time.monotonic() - talk_ended
        # Twilio closes the socket once it has ``end``.

    assert "21 degrees" in spoken(weather)
    assert spoken(farewell).strip() == goodbye
    assert farewell[-1] == TALK_END
    assert end["type"] == "end"
    handoff = orjson.loads(end["handoffData"])
    assert handoff["reasonCode"] == "end-call"
    assert handoff["reason"] == "done"
    # ``end`` waits for the goodbye to be spoken (~3 s at 15 chars/s), not sent with it.
    assert waited > 1.0
    (hook,) = webhooks.received()
    assert hook.body == {"city": "Paris"}
    assert hook.headers["x-gateway-signature"].startswith("sha256=")
    assert declared(fake_gemini) == ["end_call", "transfer_call", "send_digits", "get_weather"]
    _, after_tool, _ = fake_gemini.wait_for_requests(3)
    (result,) = [
        p["functionResponse"]
        for c in after_tool.contents
        for p in c["parts"]
        if "functionResponse" in p
    ]
    assert result["response"] == {"temp_c": 21, "sky": "sunny"}


async def test_twilio_send_digits(
    start_gateway: GatewayFactory,
    fake_gemini: FakeGemini,
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    gateway = gateway_with_tools(start_gateway, fake_gemini, webhooks, tmp_path)
    fake_gemini.reply_events(
        [function_call_event("send_digits", {"digits": "1234#"}, text="Pressing it now.")]
    )
    async with await Client.connect(f"{gateway.ws_url}/twilio") as call:
        await call.send(SETUP)
        await call.send(prompt("Press one two three four pound."))
        frames = await talk(call)
    digits = [f for f in frames if f["type"] == "sendDigits"]
    assert digits == [{"type": "sendDigits", "digits": "1234#"}]
    assert spoken([f for f in frames if f["type"] == "text"]).strip() == "Pressing it now."
    assert frames.index(digits[0]) > 0  # after the words that announce it


async def test_retell_weather_by_webhook_then_end_call_on_the_last_response(
    start_gateway: GatewayFactory,
    fake_gemini: FakeGemini,
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    gateway = gateway_with_tools(start_gateway, fake_gemini, webhooks, tmp_path)
    goodbye = "Goodbye, and enjoy Paris!"
    script_weather_then_goodbye(fake_gemini, function_call_event("end_call", text=goodbye))
    first = [utterance("user", "Weather in Paris?")]
    call, _ = await connect(gateway, "call_tools_end")
    async with call:
        await call.send(required(1, first))
        weather = await response(call, 1)
        said = "".join(f["content"] for f in weather).strip()
        second = [*first, utterance("agent", said), utterance("user", "Great, bye.")]
        await call.send(required(2, second))
        farewell = await response(call, 2)
    assert "21 degrees" in said
    assert weather[-1]["end_call"] is False
    assert "".join(f["content"] for f in farewell).strip() == goodbye
    assert all(f["end_call"] is False for f in farewell[:-1])
    # Retell hangs up once the content of this response is spoken.
    assert farewell[-1] == {
        "response_type": "response",
        "response_id": 2,
        "content": "",
        "content_complete": True,
        "end_call": True,
    }
    assert len(webhooks.received()) == 1


async def test_retell_transfer(
    start_gateway: GatewayFactory,
    fake_gemini: FakeGemini,
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    gateway = gateway_with_tools(start_gateway, fake_gemini, webhooks, tmp_path)
    fake_gemini.reply_events(
        [
            function_call_event(
                "transfer_call", {"to": "+14155550123"}, text="Connecting you to billing now."
            )
        ]
    )
    call, _ = await connect(gateway, "call_tools_transfer")
    async with call:
        await call.send(required(1, [utterance("user", "Billing, please.")]))
        frames = await response(call, 1)
    assert "".join(f["content"] for f in frames).strip() == "Connecting you to billing now."
    assert frames[-1]["transfer_number"] == "+14155550123"
    assert frames[-1]["end_call"] is False
    # Call control alone does not go back to the model.
    assert len(fake_gemini.requests) == 1


async def test_layercode_response_data_carries_the_tool_result(
    start_gateway: GatewayFactory,
    fake_gemini: FakeGemini,
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    gateway = gateway_with_tools(start_gateway, fake_gemini, webhooks, tmp_path)
    fake_gemini.reply_events([function_call_event("get_weather", {"city": "Oslo"})])
    fake_gemini.reply("It is snowing in Oslo.")
    async with http_client(gateway.http_url) as client:
        status, events = await webhook(client, message("Weather in Oslo?", "turn-1"))
    assert status == 200
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.data"
    assert kinds[-1] == "response.end"
    assert events[0] == {
        "type": "response.data",
        "turn_id": "turn-1",
        "content": {
            "type": "function_result",
            "call_id": events[0]["content"]["call_id"],
            "name": "get_weather",
            "output": {"temp_c": -3, "sky": "snow"},
        },
    }
    assert any("snowing" in e.get("content", "") for e in events if e["type"] == "response.tts")
