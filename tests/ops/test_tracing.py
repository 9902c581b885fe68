"""Traces: a span per turn with its provider call, first token and store
commits as children, carrying ids and never text; exported over real OTLP/HTTP."""

from __future__ import annotations

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app, uvicorn_options
from gateway.settings import Settings
from gateway.tracing import Tracing, provider_with
from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import GatewayFactory
from tests.support.otlp import otlp_collector
from tests.support.servers import running

USER_TEXT = "my secret plan is Zebra-77"
MODEL_TEXT = "Your plan Zebra-77 sounds good. Anything else?"


def test_tracing_is_off_unless_otel_variables_configure_it() -> None:
    assert Settings(_env_file=None).otlp_traces_endpoint is None
    on = Settings(_env_file=None, OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/")
    assert on.otlp_traces_endpoint == "http://collector:4318/v1/traces"
    just_otlp = Settings(_env_file=None, OTEL_TRACES_EXPORTER="otlp")
    assert just_otlp.otlp_traces_endpoint == "http://localhost:4318/v1/traces"
    disabled = Settings(
        _env_file=None, OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318", OTEL_SDK_DISABLED="true"
    )
    assert disabled.otlp_traces_endpoint is None
    none = Settings(
        _env_file=None, OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318", OTEL_TRACES_EXPORTER="none"
    )
    assert none.otlp_traces_endpoint is None


async def test_a_turn_is_one_span_with_provider_first_token_and_store_children(
    tmp_path, fake_gemini: FakeGemini
) -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(provider_with(SimpleSpanProcessor(exporter)))
    settings = Settings(
        _env_file=None,
        GEMINI_API_KEY="test-key-not-secret",
        GEMINI_BASE_URL=fake_gemini.url,
        GATEWAY_STORE=f"sqlite:///{tmp_path / 's.db'}",
    )
    fake_gemini.reply(MODEL_TEXT)
    with running(create_app(settings, tracing=tracing), **uvicorn_options(settings)) as gateway:
        async with await Client.connect(f"{gateway.ws_url}/ws") as client:
            ready = await client.ready()
            await client.send(USER_TEXT)
            events = await client.turn()
    assert events[-1]["status"] == "completed"
    spans = exporter.get_finished_spans()
    turns = [s for s in spans if s.name == "turn"]
    assert len(turns) == 1
    turn = turns[0]
    assert turn.attributes["gateway.session_id"] == ready["session_id"]
    assert turn.attributes["gateway.turn_id"] == "t1"
    assert turn.attributes["gateway.route"] == "/ws"
    assert turn.attributes["gateway.turn.status"] == "completed"
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == turn.context.span_id
    ]
    names = sorted({s.name for s in children})
    assert names == ["provider.stream", "store.commit"]
    stream = next(s for s in children if s.name == "provider.stream")
    assert stream.attributes["gateway.provider.outcome"] == "ok"
    first = [s for s in spans if s.name == "provider.first_token"]
    assert len(first) == 1
    assert first[0].parent.span_id == stream.context.span_id
    assert first[0].end_time <= stream.end_time
    assert all(s.context.trace_id == turn.context.trace_id for s in children)
    for span in spans:
        for value in (span.attributes or {}).values():
            assert "Zebra" not in str(value), f"text leaked into span {span.name}"


async def test_spans_reach_an_otlp_collector_over_http(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply(MODEL_TEXT)
    with otlp_collector() as collector:
        gateway = start_gateway(
            GEMINI_API_KEY="test-key-not-secret",
            GEMINI_BASE_URL=fake_gemini.url,
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        )
        async with await Client.connect(f"{gateway.ws_url}/ws") as client:
            ready = await client.ready()
            await client.send(USER_TEXT)
            await client.turn()
            fake_gemini.fail(503)
            fake_gemini.fail(400)
            await client.send("and now?")
            failed = await client.turn("t2")
        gateway.stop()  # the lifespan flushes the batch to the collector
    assert failed[-1]["status"] == "failed"
    turns = {s["attributes"]["gateway.turn_id"]: s for s in collector.spans if s["name"] == "turn"}
    assert set(turns) == {"t1", "t2"}
    assert turns["t1"]["attributes"]["gateway.session_id"] == ready["session_id"]
    assert turns["t2"]["attributes"]["gateway.turn.status"] == "failed"
    assert turns["t2"]["status"] == 2  # STATUS_CODE_ERROR
    assert collector.spans[0]["resource"]["service.name"] == "voice-gateway"
    retried = [
        s
        for s in collector.spans
        if s["name"] == "provider.stream" and s["parent_id"] == turns["t2"]["span_id"]
    ]
    outcomes = sorted(s["attributes"]["gateway.provider.outcome"] for s in retried)
    assert outcomes == ["bad_request", "unavailable"]
    assert collector.requests[0]["content-type"] == "application/x-protobuf"
    assert "Zebra" not in repr(collector.spans)


def test_open_turns_are_bounded_and_an_evicted_turn_is_ended_abandoned(monkeypatch) -> None:
    monkeypatch.setattr("gateway.tracing.MAX_OPEN_TURNS", 2)
    exporter = InMemorySpanExporter()
    tracing = Tracing(provider_with(SimpleSpanProcessor(exporter)))
    tracing.turn("s1", "t1")
    tracing.turn("s1", "t2")
    assert tracing.open_turn("s1") is tracing.turn("s1", "t2")
    tracing.turn("s2", "t1")  # s1/t1 is evicted
    (evicted,) = exporter.get_finished_spans()
    assert evicted.attributes["gateway.turn_id"] == "t1"
    assert evicted.attributes["gateway.turn.status"] == "abandoned"
    tracing.end_turn("s1", "t2", "completed", None)
    assert tracing.open_turn("s1") is None
    assert tracing.open_turn("s2") is not None
    tracing.shutdown()
    assert {s.attributes["gateway.turn.status"] for s in exporter.get_finished_spans()} == {
        "abandoned",
        "completed",
    }


def test_tracing_off_makes_no_spans() -> None:
    tracing = Tracing(None)
    assert tracing.turn("s1", "t1") is None
    assert tracing.child("x", None, {}) is None
    tracing.shutdown()
