"""A small tool webhook server (a weather lookup) over real HTTP, for server-tool tests.

It records every request (headers and JSON body) and answers by path:
``/weather`` the weather of ``city``, ``/slow`` after a long pause, ``/broken``
HTTP 500, ``/text`` a body that is not JSON, ``/redirect`` a 302.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support.servers import RunningServer, running

WEATHER = {"Paris": {"temp_c": 21, "sky": "sunny"}, "Oslo": {"temp_c": -3, "sky": "snow"}}


@dataclass
class Hook:
    """One request the webhook server received."""

    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any


@dataclass
class WebhookServer:
    server: RunningServer
    hooks: list[Hook] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"{self.server.http_url}{path}"

    def received(self) -> list[Hook]:
        with self.lock:
            return list(self.hooks)


def _app(store: list[Hook], lock: threading.Lock) -> Starlette:
    async def handle(request: Request) -> Response:
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        with lock:
            store.append(Hook(request.url.path, dict(request.headers), raw, body))
        path = request.url.path
        if path == "/slow":
            await asyncio.sleep(5)
        if path == "/broken":
            return PlainTextResponse("boom", status_code=500)
        if path == "/text":
            return PlainTextResponse("not json")
        if path == "/redirect":
            return RedirectResponse("/weather", status_code=302)
        city = body.get("city") if isinstance(body, dict) else None
        return JSONResponse(WEATHER.get(str(city), {"error": f"no weather for {city}"}))

    return Starlette(routes=[Route("/{name}", handle, methods=["POST"])])


@contextmanager
def webhook_server() -> Iterator[WebhookServer]:
    """The webhook server, running on a free port until the block ends."""
    hooks: list[Hook] = []
    lock = threading.Lock()
    with running(_app(hooks, lock)) as server:
        yield WebhookServer(server, hooks, lock)


@pytest.fixture(scope="session")
def webhook_server_session() -> Iterator[WebhookServer]:
    with webhook_server() as server:
        yield server


@pytest.fixture
def webhooks(webhook_server_session: WebhookServer) -> WebhookServer:
    with webhook_server_session.lock:
        webhook_server_session.hooks.clear()
    return webhook_server_session
