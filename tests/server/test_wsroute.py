"""gateway.wsroute.SocketRoute serves a WebSocket endpoint as starlette's
WebSocketRoute does: path parameters, the app's exception handlers around the
endpoint (starlette's own WebSocketException handler included), and an
unhandled exception left to the server."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.exceptions import WebSocketException
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.wsroute import SocketRoute


class Refused(Exception):
    """Raised by the endpoint; the app has a handler for it."""


class Unhandled(Exception):
    """Raised by the endpoint; nothing handles it."""


async def endpoint(websocket: WebSocket) -> None:
    kind = websocket.path_params["kind"]
    if kind == "refused":
        raise Refused
    if kind == "accepted-then-refused":
        await websocket.accept()
        raise Refused
    if kind == "policy":
        raise WebSocketException(code=4003, reason="not you")
    if kind == "unhandled":
        raise Unhandled
    await websocket.accept()
    await websocket.send_json({"kind": kind, "route": websocket.scope["endpoint"].__name__})
    await websocket.close(4000)


def make_client(handled: list[WebSocketState] | None = None) -> TestClient:
    """``handled`` gets the state of the WebSocket each handler call was given."""

    async def on_refused(websocket: WebSocket, exc: Exception) -> None:
        # The route's own handlers wrap the endpoint: the handler gets the endpoint's
        # WebSocket (accepted, when it was), not a fresh one from the outer middleware.
        if handled is not None:
            handled.append(websocket.application_state)
        await websocket.close(4001, "refused by its handler")

    app = Starlette(
        routes=[SocketRoute("/socket/{kind}", endpoint)], exception_handlers={Refused: on_refused}
    )
    return TestClient(app)


def test_it_serves_the_endpoint_with_its_path_parameters() -> None:
    with make_client().websocket_connect("/socket/hello") as ws:
        assert ws.receive_json() == {"kind": "hello", "route": "endpoint"}
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 4000


def test_the_apps_exception_handlers_apply_to_the_endpoint() -> None:
    handled: list[WebSocketState] = []
    client = make_client(handled)
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/socket/refused"):
        pass
    assert (closed.value.code, closed.value.reason) == (4001, "refused by its handler")
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/socket/policy"):
        pass
    assert (closed.value.code, closed.value.reason) == (4003, "not you")
    handled.clear()
    with (
        client.websocket_connect("/socket/accepted-then-refused") as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_text()
    assert closed.value.code == 4001
    assert handled == [WebSocketState.CONNECTED]


def test_an_unhandled_exception_reaches_the_server() -> None:
    with pytest.raises(Unhandled), make_client().websocket_connect("/socket/unhandled"):
        pass
