"""Server tool calls are counted, timed and traced: a ``tool.call`` span under the
turn, and ``gateway_tool_calls_total`` by tool and outcome, through the real app on
the fake Gemini with a real webhook server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.exposition import generate_latest

from gateway.app import create_app, uvicorn_options
from gateway.core.history import FunctionCall
from gateway.instrumented import InstrumentedTools
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings
from gateway.tracing import Tracing, provider_with
from tests.ops.test_metrics import samples, value
from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini, function_call_event
from tests.support.servers import running
from tests.support.webhooks import WebhookServer


def tools_file(path: Path, webhooks: WebhookServer) -> Path:
    path.write_text(
        "allow_private_addresses: true\n"
        "tools:\n"
        "  - name: get_weather\n"
        "    description: The current weather in a city.\n"
        "    parameters: {type: object, properties: {city: {type: string}}}\n"
        f"    url: {webhooks.url('/weather')}\n"
        "  - name: get_forecast\n"
        "    description: Tomorrow's weather in a city.\n"
        "    parameters: {type: object, properties: {city: {type: string}}}\n"
        f"    url: {webhooks.url('/broken')}\n",
        encoding="utf-8",
    )
    return path


async def test_each_server_tool_call_is_a_span_under_its_turn_and_is_counted(
    tmp_path: Path, fake_gemini: FakeGemini, webhooks: WebhookServer
) -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(provider_with(SimpleSpanProcessor(exporter)))
    settings = Settings(
        _env_file=None,
        GEMINI_API_KEY="test-key-not-secret",
        GEMINI_BASE_URL=fake_gemini.url,
        GATEWAY_STORE=f"sqlite:///{tmp_path / 's.db'}",
        GATEWAY_TOOLS_FILE=str(tools_file(tmp_path / "tools.yaml", webhooks)),
    )
    fake_gemini.reply_events(
        [
            function_call_event(
                "get_weather",
                {"city": "Paris"},
                call_id="c-weather",
                more=[
                    {
                        "functionCall": {
                            "name": "get_forecast",
                            "args": {"city": "Paris"},
                            "id": "c-forecast",
                        }
                    }
                ],
            )
        ]
    )
    fake_gemini.reply("It is sunny in Paris; tomorrow is unknown.")
    app = create_app(settings, tracing=tracing)
    with running(app, **uvicorn_options(settings)) as gateway:
        async with await Client.connect(f"{gateway.ws_url}/ws") as client:
            await client.ready()
            await client.send("Weather in Paris, today and tomorrow?")
            events = await client.turn()
        async with httpx.AsyncClient() as http:
            scraped = samples((await http.get(f"{gateway.http_url}/metrics")).text)
    assert events[-1]["status"] == "completed"
    assert sorted(e["name"] for e in events if e["type"] == "response.function_result") == [
        "get_forecast",
        "get_weather",
    ]

    spans = exporter.get_finished_spans()
    turn = next(s for s in spans if s.name == "turn")
    calls = {s.attributes["gateway.tool.call_id"]: s for s in spans if s.name == "tool.call"}
    assert set(calls) == {"c-weather", "c-forecast"}
    for span in calls.values():
        assert span.parent is not None
        assert span.parent.span_id == turn.context.span_id
    assert calls["c-weather"].attributes["gateway.tool.name"] == "get_weather"
    assert calls["c-weather"].attributes["gateway.tool.outcome"] == "ok"
    assert calls["c-forecast"].attributes["gateway.tool.outcome"] == "error"
    assert not calls["c-forecast"].status.is_ok

    assert value(scraped, "gateway_tool_calls_total", tool="get_weather", outcome="ok") == 1
    assert value(scraped, "gateway_tool_calls_total", tool="get_forecast", outcome="error") == 1
    assert value(scraped, "gateway_tool_call_seconds_count", tool="get_weather") == 1


class Runner:
    """A tool runner that answers every call, or waits for ever."""

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang

    async def run(self, call: FunctionCall) -> str:
        if self.hang:
            await asyncio.Event().wait()
        return '{"ok": true}'

    async def aclose(self) -> None: ...


async def test_a_name_not_in_the_tools_file_is_counted_as_unknown_and_a_cancel_as_cancelled() -> (
    None
):
    metrics = GatewayMetrics()
    tools = InstrumentedTools(Runner(), ["get_weather"], metrics, Tracing(None))
    await tools.run(FunctionCall("c1", "made_up_by_the_model"))
    await tools.run(FunctionCall("c2", "get_weather"))
    hanging = InstrumentedTools(Runner(hang=True), ["get_weather"], metrics, Tracing(None))
    call = asyncio.create_task(hanging.run(FunctionCall("c3", "get_weather")))
    await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    scraped = samples(generate_latest(metrics.registry).decode())
    assert value(scraped, "gateway_tool_calls_total", tool="unknown", outcome="ok") == 1
    assert value(scraped, "gateway_tool_calls_total", tool="get_weather", outcome="ok") == 1
    assert value(scraped, "gateway_tool_calls_total", tool="get_weather", outcome="cancelled") == 1
    assert not any("made_up" in str(labels) for _, labels in scraped)
