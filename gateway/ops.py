"""What an operator gets: the metrics and tracing of an app, its middleware
(request ids, CORS, ``OPTIONS``) and routes (``/metrics``, ``/status``,
``/openapi.json``, ``/api-docs``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.apidocs import openapi_document
from gateway.metrics import GatewayMetrics, key_refusal, metrics_endpoint
from gateway.middleware import ObservabilityMiddleware
from gateway.settings import Settings
from gateway.tracing import Tracing, otlp_provider

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
#: Methods the HTTP API answers cross-origin.
CORS_METHODS = ["GET", "POST", "DELETE", "OPTIONS"]
CORS_HEADERS = ["authorization", "content-type", "x-request-id"]


@dataclass(frozen=True, slots=True)
class Telemetry:
    """The metrics and tracing of one app."""

    metrics: GatewayMetrics
    tracing: Tracing

    @classmethod
    def from_settings(cls, settings: Settings, tracing: Tracing | None = None) -> Telemetry:
        """Fresh metrics; traces to the OTLP endpoint the ``OTEL_*`` variables
        name (none: tracing off), unless ``tracing`` is given."""
        if tracing is None:
            endpoint = settings.otlp_traces_endpoint
            tracing = Tracing(otlp_provider(endpoint) if endpoint else None)
        return cls(GatewayMetrics(), tracing)


class OptionsMiddleware:
    """Answers ``OPTIONS`` on HTTP routes with ``204`` and an ``Allow`` header
    (CORS preflights from allowed origins are answered before, by starlette's
    ``CORSMiddleware``); routes themselves only list their own methods."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function: what it passes on (every WebSocket, for its whole life)
        # costs no coroutine frame here.
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            return self.app(scope, receive, send)
        return self._options(scope, receive, send)

    async def _options(self, scope: Scope, receive: Receive, send: Send) -> None:
        methods: set[str] = set()
        for route in getattr(scope.get("app"), "routes", ()):
            if isinstance(route, Route) and route.path_regex.match(scope["path"]):
                methods.update(route.methods or ())
        if not methods:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        await Response(status_code=204, headers={"Allow": allow})(scope, receive, send)


def ops_middleware(settings: Settings, telemetry: Telemetry) -> list[Middleware]:
    """Outermost first: request ids and edge metrics, CORS, ``OPTIONS``."""
    middleware = [Middleware(ObservabilityMiddleware, telemetry.metrics, telemetry.tracing)]
    origins = settings.cors_origin_list
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=CORS_METHODS,
                allow_headers=CORS_HEADERS,
                expose_headers=["x-request-id"],
                allow_credentials=False,
                max_age=600,
            )
        )
    middleware.append(Middleware(OptionsMiddleware))
    return middleware


def ops_routes(settings: Settings, telemetry: Telemetry) -> list[BaseRoute]:
    """``/metrics``, ``/status`` (+ ``/status.json``), ``/openapi.json``, ``/api-docs``."""
    metrics = telemetry.metrics
    key = settings.metrics_key.get_secret_value() if settings.metrics_key else None
    guarded = metrics_endpoint(metrics, key)

    def status_json(request: Request) -> Response:
        refused = key_refusal(request, key)
        if refused is not None:
            return refused
        return JSONResponse(metrics.status(), headers={"Cache-Control": "no-store"})

    def page(name: str) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            return FileResponse(WEB_DIR / name, headers={"Cache-Control": "no-cache"})

        return serve

    document = openapi_document()

    def openapi(request: Request) -> Response:
        return JSONResponse(document)

    return [
        Route("/metrics", guarded, methods=["GET"]),
        Route("/status", page("dashboard.html"), methods=["GET"]),
        Route("/status.json", status_json, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/api-docs", page("api-docs.html"), methods=["GET"]),
    ]
