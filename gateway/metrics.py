"""Prometheus metrics: one :class:`GatewayMetrics` per app, with its own registry.

Nothing here is global: every app (and so every test) builds its own
``CollectorRegistry``, served at ``/metrics`` in the text exposition format.
Most figures are read at the edges without touching the session shell: turns,
latencies, provider failures and rate-limit refusals from the events as the
store commits them (:mod:`gateway.instrumented`), connections, closes and
resumes from the ASGI messages (:mod:`gateway.middleware`).

A small window of recent turns (time, route, first-chunk latency) feeds the
``/status`` page, which wants exact recent percentiles rather than histogram
buckets.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import deque
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

#: Seconds; from an instant reply to a slow model's whole answer.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
QUEUE_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: How far back the status page looks.
WINDOW_S = 30 * 60.0


#: One ended turn, as the status page needs it: when it ended, its route, its status
#: and its first chunk's latency in seconds. A plain tuple of strings and numbers, which
#: CPython's cyclic collector stops tracking: the last 20,000 turns are not walked by
#: every full collection, as instances of a class would be.
RecentTurn = tuple[float, str, str, float | None]

_TurnChildren = tuple[Counter, Histogram, Histogram, Histogram]


class _LiveSessions(Collector):
    """``gateway_live_sessions``, read from the session manager at scrape time."""

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "gateway_live_sessions", "Sessions this process runs now.", value=self._count()
        )

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily("gateway_live_sessions", "Sessions this process runs now.")]


class GatewayMetrics:
    """The gateway's instruments, registered in a registry of their own."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self._live_sessions: Callable[[], int] = lambda: 0
        self.recent: deque[RecentTurn] = deque(maxlen=20_000)
        # Routes and statuses are a few fixed names each, so this stays small.
        self._turn_cache: dict[tuple[str, str], _TurnChildren] = {}
        r = self.registry
        self.connections = Gauge(
            "gateway_connections", "Open WebSocket connections.", ["route"], registry=r
        )
        self.connections_opened = Counter(
            "gateway_connections_opened", "WebSocket connections accepted.", ["route"], registry=r
        )
        self.closes = Counter(
            "gateway_websocket_closes",
            "WebSocket connections the gateway closed, by close code.",
            ["route", "code"],
            registry=r,
        )
        self.slow_client_closes = Counter(
            "gateway_slow_client_closes",
            "Connections closed (4008) because the client did not read its events.",
            ["route"],
            registry=r,
        )
        self.http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of its body).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turns = Counter(
            "gateway_turns", "Turns ended, by status.", ["route", "status"], registry=r
        )
        self.first_token = Histogram(
            "gateway_turn_first_token_seconds",
            "From the user's message to the model's first text.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_chunk = Histogram(
            "gateway_turn_first_chunk_seconds",
            "From the user's message to the first speakable chunk.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turn_duration = Histogram(
            "gateway_turn_duration_seconds",
            "From the user's message to the turn's end marker.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_errors = Counter(
            "gateway_provider_errors",
            "Turns the provider failed, by detail (rate_limited, timeout, ...).",
            ["detail"],
            registry=r,
        )
        self.provider_calls = Counter(
            "gateway_provider_calls",
            "Provider streams, retries included, by outcome (ok, cancelled or the error code).",
            ["outcome"],
            registry=r,
        )
        self.tool_calls = Counter(
            "gateway_tool_calls",
            "Server tool calls (GATEWAY_TOOLS_FILE), by tool and outcome: ok, error (the "
            "model was given an error result) or cancelled.",
            ["tool", "outcome"],
            registry=r,
        )
        self.tool_duration = Histogram(
            "gateway_tool_call_seconds",
            "One server tool call, its webhook's answer included.",
            ["tool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_commit = Histogram(
            "gateway_store_commit_seconds",
            "One store commit (events, turns and state of a session, in one transaction).",
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "gateway_store_errors", "Store operations that failed.", ["operation"], registry=r
        )
        self.send_queue_depth = Histogram(
            "gateway_send_queue_depth",
            "Events waiting for a client, sampled as each one is queued.",
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.resumes = Counter(
            "gateway_resumes", "Sessions resumed on /ws (session.ready with resumed).", registry=r
        )
        self.resyncs = Counter(
            "gateway_resyncs",
            "Resumes whose missed events were no longer all kept (session.resync).",
            registry=r,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited",
            "Refusals for going over a limit: rate_limited errors sent, 429 answers.",
            ["route"],
            registry=r,
        )
        r.register(_LiveSessions(lambda: self._live_sessions()))

    def count_live_sessions(self, count: Callable[[], int]) -> None:
        """Read the live-session gauge from ``count`` at each scrape."""
        self._live_sessions = count

    def turn_ended(
        self,
        route: str,
        status: str,
        *,
        first_token_ms: float | None,
        first_chunk_ms: float | None,
        total_ms: float | None,
    ) -> None:
        """One turn's end marker (``response.end``) was stored."""
        turns, first_token, first_chunk, duration = self._turn_children(route, status)
        turns.inc()
        if first_token_ms is not None:
            first_token.observe(first_token_ms / 1000)
        if first_chunk_ms is not None:
            first_chunk.observe(first_chunk_ms / 1000)
        if total_ms is not None:
            duration.observe(total_ms / 1000)
        now = self._clock()
        chunk_s = None if first_chunk_ms is None else first_chunk_ms / 1000
        self.recent.append((now, route, status, chunk_s))
        while self.recent and self.recent[0][0] < now - WINDOW_S:
            self.recent.popleft()

    def _turn_children(self, route: str, status: str) -> _TurnChildren:
        """The labelled children a turn's end updates, looked up once per route and
        status (``labels()`` takes a lock and builds a key on every call)."""
        key = (route, status)
        children = self._turn_cache.get(key)
        if children is None:
            children = self._turn_cache[key] = (
                self.turns.labels(route, status),
                self.first_token.labels(route),
                self.first_chunk.labels(route),
                self.turn_duration.labels(route),
            )
        return children

    def status(self, *, minutes: int = 30) -> dict[str, object]:
        """What ``/status.json`` shows: live counts, and per minute for the last
        ``minutes`` minutes the turns ended and first-chunk percentiles."""
        now = self._clock()
        start = math.floor(now / 60) * 60 - (minutes - 1) * 60
        buckets: list[list[RecentTurn]] = [[] for _ in range(minutes)]
        for turn in self.recent:
            index = int((turn[0] - start) // 60)  # (at, route, status, first_chunk_s)
            if 0 <= index < minutes:
                buckets[index].append(turn)
        series = []
        for index, turns in enumerate(buckets):
            latencies = sorted(chunk for _, _, _, chunk in turns if chunk is not None)
            series.append(
                {
                    "minute": start + index * 60,
                    "turns": len(turns),
                    "failed": sum(status == "failed" for _, _, status, _ in turns),
                    "first_chunk_p50_s": percentile(latencies, 50),
                    "first_chunk_p90_s": percentile(latencies, 90),
                    "first_chunk_p99_s": percentile(latencies, 99),
                }
            )
        connections = {
            sample.labels["route"]: int(sample.value)
            for metric in self.connections.collect()
            for sample in metric.samples
        }
        return {
            "time": now,
            "live_sessions": self._live_sessions(),
            "connections": connections,
            # A rolling 60 s, not the current clock minute (empty just after :00).
            "turns_last_minute": sum(at >= now - 60 for at, _, _, _ in self.recent),
            "minutes": series,
        }


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """The nearest-rank percentile of already sorted values (``None`` when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def key_refusal(request: Request, key: str | None) -> Response | None:
    """``401`` unless ``key`` is unset or the request carries ``Bearer <key>``."""
    if key is None:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), key.encode()):
        return None
    return JSONResponse(
        {"error": {"code": "unauthorized", "message": "a bearer GATEWAY_METRICS_KEY is required"}},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def metrics_endpoint(metrics: GatewayMetrics, key: str | None) -> Callable[[Request], Response]:
    """``GET /metrics``: the text exposition; with ``key``, only for ``Bearer <key>``."""

    def endpoint(request: Request) -> Response:
        refused = key_refusal(request, key)
        if refused is not None:
            return refused
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return endpoint
