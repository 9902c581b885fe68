"""The store and the provider, wrapped to be measured and traced.

Every event reaches the store before any client, so the store is where turns are
counted: a ``response.end`` committed is a turn ended (status and latencies come
from the event itself), an ``error`` committed with a ``detail`` is a provider
failure, one with code ``rate_limited`` a refusal. Counting there sees each
event exactly once (a failed commit is retried with the next batch and counted
when it lands) and needs no hook inside the session shell. The route comes from
the context of the task that commits (the session's pipeline, started by the
connection that opened the session).

The provider wrapper times each stream and its first token, and counts streams
by outcome, retries included. The tool wrapper counts and times each server tool
call by tool and outcome, with a ``tool.call`` span under the session's open turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Sequence

import orjson
from opentelemetry.trace import Span, Status, StatusCode

from gateway.core.history import FunctionCall, GenerationRequest, StreamItem
from gateway.core.records import TurnRecord
from gateway.logformat import bind_turn, route_var, session_id_var
from gateway.metrics import GatewayMetrics
from gateway.providers.base import LLMProvider, ProviderError
from gateway.stores.base import SessionStore, StoredEvent, StoreError
from gateway.stores.wrapper import StoreWrapper
from gateway.tools.webhook import ToolRunner
from gateway.tracing import Tracing


class InstrumentedStore(StoreWrapper):
    """A :class:`SessionStore` that measures commits and observes the events."""

    def __init__(self, inner: SessionStore, metrics: GatewayMetrics, tracing: Tracing) -> None:
        super().__init__(inner)
        self._metrics = metrics
        self._tracing = tracing

    async def commit(
        self,
        session_id: str,
        *,
        events: Sequence[StoredEvent] = (),
        turns: Sequence[TurnRecord] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
    ) -> None:
        route = route_var.get() or "unknown"
        tracing = self._tracing
        parent = None
        if tracing.enabled:
            turn_id = next((e.turn_id for e in events if e.turn_id is not None), None)
            parent = (
                tracing.turn(session_id, turn_id, route=route)
                if turn_id is not None
                else tracing.open_turn(session_id)
            )
        span = tracing.child(
            "store.commit",
            parent,
            {"gateway.store.events": len(events), "gateway.store.turns": len(turns)},
        )
        started = time.perf_counter()
        try:
            await self.inner.commit(
                session_id, events=events, turns=turns, state=state, updated_at=updated_at
            )
        except StoreError as exc:
            self._metrics.store_errors.labels("commit").inc()
            if span is not None:
                span.record_exception(exc)
                span.end()
            raise
        self._metrics.store_commit.observe(time.perf_counter() - started)
        if span is not None:
            span.end()
        for event in events:
            if event.type in ("response.end", "error"):
                self._observe(session_id, route, event)

    def _observe(self, session_id: str, route: str, event: StoredEvent) -> None:
        data = orjson.loads(event.data)
        metrics = self._metrics
        if event.type == "response.end":
            latency = data.get("latency") or {}
            metrics.turn_ended(
                route,
                str(data.get("status")),
                first_token_ms=latency.get("first_token_ms"),
                first_chunk_ms=latency.get("first_chunk_ms"),
                total_ms=latency.get("total_ms"),
            )
            self._tracing.end_turn(
                session_id, str(event.turn_id), str(data.get("status")), data.get("reason")
            )
        elif data.get("code") == "rate_limited":
            metrics.rate_limited.labels(route).inc()
        elif data.get("detail") and data.get("turn_id"):
            metrics.provider_errors.labels(str(data["detail"])).inc()

    # --- the rest of the interface, passed through -------------------------------


class InstrumentedProvider:
    """An :class:`LLMProvider` whose streams are counted, timed and traced."""

    def __init__(self, inner: LLMProvider, metrics: GatewayMetrics, tracing: Tracing) -> None:
        self.inner = inner
        self._metrics = metrics
        self._tracing = tracing

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        # This body runs in the turn's generation task: the ids bound here stay
        # with that task's log lines.
        bind_turn(request.turn_id)
        tracing = self._tracing
        turn = tracing.turn(request.session_id, request.turn_id, route=route_var.get())
        attrs = {"gateway.provider": self.inner.name, "gateway.model": self.inner.model}
        span = tracing.child("provider.stream", turn, attrs)
        first = tracing.child("provider.first_token", span, attrs)
        outcome = "cancelled"
        deltas = 0
        stream = self.inner.stream(request)
        try:
            async for item in stream:
                if isinstance(item, str):  # usage and finish items are not text
                    if first is not None and deltas == 0:
                        first.end()
                    deltas += 1
                yield item
            outcome = "ok"
        except ProviderError as exc:
            outcome = exc.code
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, exc.code))
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            self._metrics.provider_calls.labels(outcome).inc()
            if first is not None and deltas == 0:
                first.end()
            if span is not None:
                span.set_attribute("gateway.provider.outcome", outcome)
                span.set_attribute("gateway.provider.deltas", deltas)
                span.end()

    async def aclose(self) -> None:
        await self.inner.aclose()


class InstrumentedTools:
    """A :class:`~gateway.tools.webhook.ToolRunner` whose calls are counted, timed and
    traced: a ``tool.call`` span under the open turn of the session the calling task
    names. Tools not in ``names`` are labelled ``unknown`` (a model may call any name:
    it must not become a label value)."""

    def __init__(
        self,
        inner: ToolRunner,
        names: Collection[str],
        metrics: GatewayMetrics,
        tracing: Tracing,
    ) -> None:
        self.inner = inner
        self._names = frozenset(names)
        self._metrics = metrics
        self._tracing = tracing

    async def run(self, call: FunctionCall) -> str:
        """The inner runner's result (a runner raises only when cancelled; anything
        else it raises is counted as an error and raised on)."""
        tool = call.name if call.name in self._names else "unknown"
        session_id = session_id_var.get()
        parent = self._tracing.open_turn(session_id) if session_id else None
        span = self._tracing.child(
            "tool.call", parent, {"gateway.tool.name": tool, "gateway.tool.call_id": call.call_id}
        )
        started = time.perf_counter()
        try:
            output = await self.inner.run(call)
        except asyncio.CancelledError:
            self._done(span, tool, "cancelled", started)
            raise
        except Exception:  # a runner that broke its contract: counted, then raised
            self._done(span, tool, "error", started)
            raise
        self._done(span, tool, "error" if _is_error(output) else "ok", started)
        return output

    def _done(self, span: Span | None, tool: str, outcome: str, started: float) -> None:
        self._metrics.tool_calls.labels(tool, outcome).inc()
        self._metrics.tool_duration.labels(tool).observe(time.perf_counter() - started)
        if span is not None:
            span.set_attribute("gateway.tool.outcome", outcome)
            if outcome == "error":
                span.set_status(Status(StatusCode.ERROR, "the tool's result is an error"))
            span.end()

    async def aclose(self) -> None:
        """Close the inner runner."""
        await self.inner.aclose()


def _is_error(output: str) -> bool:
    """Whether a tool result (JSON text) is an error object for the model."""
    try:
        data = orjson.loads(output)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and "error" in data
