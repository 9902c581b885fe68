"""OpenTelemetry traces: one span per turn, with children for its provider call,
first token, store commits and server tool calls.

Off unless the standard ``OTEL_*`` variables configure an OTLP exporter (see
:meth:`gateway.settings.Settings.tracing_enabled`); then each app has its own
``TracerProvider`` (never the process-global one) exporting over OTLP/HTTP
protobuf in batches, flushed when the app shuts down. The exporter reads the
rest of its standard variables itself (``OTEL_EXPORTER_OTLP_HEADERS``, timeouts,
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` for the resource).

Spans carry ids, statuses, counts and timings, never what anyone said:

- ``turn`` (``gateway.session_id``, ``gateway.turn_id``, ``gateway.route``,
  ``gateway.turn.status``), from the first sign of the turn to its end marker;
- ``provider.stream`` (``gateway.provider``, ``gateway.model``, the outcome) and
  ``provider.first_token`` under it, one per attempt;
- ``store.commit`` (events, turns) under the turn the commit carries;
- ``tool.call`` (``gateway.tool.name``, ``gateway.tool.call_id``,
  ``gateway.tool.outcome``) for each server tool call, under the session's open
  turn (:class:`gateway.instrumented.InstrumentedTools`).

Turn spans are kept in a bounded table keyed by ``(session_id, turn_id)``: a
turn whose end never reaches the store is ended as ``abandoned`` when the table
is full, so nothing grows without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from gateway import __version__

MAX_OPEN_TURNS = 10_000
Attributes = Mapping[str, str | int | float | bool]


def otlp_provider(endpoint: str) -> TracerProvider:
    """A tracer provider exporting to the OTLP/HTTP traces ``endpoint`` in batches."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "voice-gateway"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def provider_with(processor: SpanProcessor) -> TracerProvider:
    """A tracer provider with one given processor (tests: an in-memory exporter)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "voice-gateway"}))
    provider.add_span_processor(processor)
    return provider


class Tracing:
    """The app's tracer, and the open turn spans. ``Tracing(None)`` traces nothing."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("gateway", __version__) if provider else None
        self._turns: OrderedDict[tuple[str, str], Span] = OrderedDict()
        self._newest: dict[str, str] = {}  # session id -> its newest open turn id

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def turn(self, session_id: str, turn_id: str, *, route: str | None = None) -> Span | None:
        """The turn's span, started now if this is the first sign of the turn."""
        if self._tracer is None:
            return None
        key = (session_id, turn_id)
        span = self._turns.get(key)
        if span is None:
            attributes: dict[str, str] = {
                "gateway.session_id": session_id,
                "gateway.turn_id": turn_id,
            }
            if route is not None:
                attributes["gateway.route"] = route
            span = self._tracer.start_span("turn", kind=SpanKind.SERVER, attributes=attributes)
            self._turns[key] = span
            self._newest[session_id] = turn_id
            while len(self._turns) > MAX_OPEN_TURNS:
                (sid, tid), oldest = self._turns.popitem(last=False)
                self._forget(sid, tid)
                oldest.set_attribute("gateway.turn.status", "abandoned")
                oldest.end()
        return span

    def open_turn(self, session_id: str) -> Span | None:
        """The newest open turn span of a session, if any."""
        turn_id = self._newest.get(session_id)
        return None if turn_id is None else self._turns.get((session_id, turn_id))

    def _forget(self, session_id: str, turn_id: str) -> None:
        if self._newest.get(session_id) == turn_id:
            del self._newest[session_id]

    def end_turn(self, session_id: str, turn_id: str, status: str, reason: str | None) -> None:
        """The turn's end marker was stored: close its span with the status."""
        span = self._turns.pop((session_id, turn_id), None)
        if span is None:
            return
        self._forget(session_id, turn_id)
        span.set_attribute("gateway.turn.status", status)
        if status == "failed":
            # ``reason`` is the gateway's own wording, never user or model text.
            span.set_status(Status(StatusCode.ERROR, reason or "failed"))
        span.end()

    def child(self, name: str, parent: Span | None, attributes: Attributes) -> Span | None:
        """A span under ``parent`` (``None`` when tracing is off or there is no parent)."""
        if self._tracer is None or parent is None:
            return None
        context = trace.set_span_in_context(parent)
        return self._tracer.start_span(name, context=context, attributes=attributes)

    def shutdown(self) -> None:
        """End what is open and flush every span to the exporter."""
        for span in self._turns.values():
            span.set_attribute("gateway.turn.status", "abandoned")
            span.end()
        self._turns.clear()
        self._newest.clear()
        if self._provider is not None:
            self._provider.shutdown()
