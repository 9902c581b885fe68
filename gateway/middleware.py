"""ASGI middleware that names each request and counts what crosses the edge.

For every HTTP request and WebSocket it binds a request id (the client's
``X-Request-ID`` when it is a sane token, else a new one; echoed in the
response) and the route *template* (``/sessions/{session_id}``, never the
path, which may hold ids or a secret) into the log context. It counts HTTP
answers and their duration, open and accepted WebSockets, every close code the
gateway sends (4008 being a slow client), and on ``/ws`` the resumes and
resyncs as they go out. On the lifespan's shutdown it flushes the traces.

It is pure ASGI (not ``BaseHTTPMiddleware``) so that WebSockets and streamed
responses pass through untouched.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable
from contextvars import Token

import orjson
from starlette.datastructures import MutableHeaders
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.logformat import request_id_var, route_var
from gateway.metrics import GatewayMetrics
from gateway.tracing import Tracing

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SESSION_EVENT = '{"type":"session.re'


def route_label(scope: Scope) -> str:
    """The template of the route that serves ``scope``, ``static`` for the page's
    files, ``unmatched`` when none does."""
    app = scope.get("app")
    partial = None
    for route in getattr(app, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return "static" if isinstance(route, Mount) else str(getattr(route, "path", "?"))
        if match is Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", "?"))
    return partial or "unmatched"


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            given: str = value.decode("latin-1")
            if _SANE_ID.match(given):
                return given
    return secrets.token_hex(8)


def _reset(tokens: tuple[Token[str | None], Token[str | None]]) -> None:
    route_token, id_token = tokens
    request_id_var.reset(id_token)
    route_var.reset(route_token)


class ObservabilityMiddleware:
    """Request ids, route labels and edge metrics around the whole app."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, tracing: Tracing) -> None:
        self.app = app
        self._metrics = metrics
        self._tracing = tracing

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function: the coroutine it hands on is the only frame a WebSocket
        # keeps here for its whole life.
        if scope["type"] == "lifespan":
            return self.app(scope, receive, self._lifespan_send(send))
        route = route_label(scope)
        request_id = _request_id(scope)
        if scope["type"] == "http":
            return self._http(scope, receive, send, route, request_id)
        return self._websocket(scope, receive, send, route, request_id)

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await asyncio.to_thread(self._tracing.shutdown)
            await send(message)

        return lifespan_send

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, route: str, request_id: str
    ) -> None:
        metrics = self._metrics
        started = time.perf_counter()
        status = 500
        tokens = route_var.set(route), request_id_var.set(request_id)

        async def http_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("x-request-id", request_id)
                metrics.http_requests.labels(route, scope["method"], str(status)).inc()
                if status == 429:
                    metrics.rate_limited.labels(route).inc()
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                metrics.http_duration.labels(route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, http_send)
        finally:
            _reset(tokens)

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, route: str, request_id: str
    ) -> None:
        tokens = route_var.set(route), request_id_var.set(request_id)
        sender = _WebSocketSend(self._metrics, send, route, request_id)
        try:
            await self.app(scope, receive, sender)
        finally:
            _reset(tokens)
            if sender.accepted:
                self._metrics.connections.labels(route).dec()


def _count_session_event(metrics: GatewayMetrics, text: str) -> None:
    """Count a resume or a resync that ``/ws`` sends."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return
    if data.get("type") == "session.ready" and data.get("resumed"):
        metrics.resumes.inc()
    elif data.get("type") == "session.resync":
        metrics.resyncs.inc()


class _WebSocketSend:
    """A WebSocket's ``send``, counting what it sends: an object with slots rather than
    a closure, since it lives as long as the socket (a closure and its cells cost
    about 300 bytes more per idle session)."""

    __slots__ = ("_metrics", "_native", "_request_id", "_route", "_send", "accepted")

    def __init__(self, metrics: GatewayMetrics, send: Send, route: str, request_id: str) -> None:
        self._metrics = metrics
        self._send = send
        self._route = route
        self._request_id = request_id
        self._native = route == "/ws"
        self.accepted = False

    def __call__(self, message: Message) -> Awaitable[None]:
        kind = message["type"]
        if kind == "websocket.send":
            if self._native:
                text = message.get("text")
                if text is not None and text.startswith(_SESSION_EVENT):
                    _count_session_event(self._metrics, text)
            return self._send(message)
        metrics, route = self._metrics, self._route
        if kind == "websocket.accept":
            self.accepted = True
            headers = list(message.get("headers") or [])
            headers.append((b"x-request-id", self._request_id.encode()))
            message = {**message, "headers": headers}
            metrics.connections.labels(route).inc()
            metrics.connections_opened.labels(route).inc()
        elif kind == "websocket.close":
            code = int(message.get("code", 1000))
            metrics.closes.labels(route, str(code)).inc()
            if code == 4008:
                metrics.slow_client_closes.labels(route).inc()
        elif kind == "websocket.http.response.start":
            metrics.http_requests.labels(route, "GET", str(message["status"])).inc()
        return self._send(message)
