"""The app's handler for a store failure that reaches starlette: 503 JSON for HTTP, a
1011 close for a WebSocket (the sockets' own path catches store errors first; this
is the net under it)."""

from __future__ import annotations

from typing import cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ExceptionHandler
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.app import store_unavailable
from gateway.errors import StoreError
from tests.support.servers import running


def failing_app() -> Starlette:
    async def http(request: Request) -> Response:
        raise StoreError("disk I/O error")

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        raise StoreError("disk I/O error")

    return Starlette(
        routes=[Route("/sessions", http), WebSocketRoute("/ws", socket)],
        exception_handlers={StoreError: cast(ExceptionHandler, store_unavailable)},
    )


async def test_a_store_failure_is_503_json_over_http_and_a_1011_close_on_a_socket() -> None:
    with running(failing_app()) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            response = await http.get("/sessions")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "store_unavailable"

        async with connect(f"{server.ws_url}/ws") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1011,
            "session store unavailable",
        )
