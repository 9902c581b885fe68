"""A ``WebSocketRoute`` that keeps fewer coroutine frames alive per open socket.

Every frame on the path to a WebSocket endpoint lives as long as the socket.
starlette's ``WebSocketRoute`` adds three that only pass the call on (``handle``
and the two ``app`` layers of ``websocket_session``), about 630 bytes per idle
session. :class:`SocketRoute` serves a function endpoint the same way (one
``WebSocket`` for the scope, the app's exception handlers around the endpoint,
through starlette's own ``wrap_app_handling_exceptions``) with only that
wrapper's frame left.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

__all__ = ["SocketRoute"]

Endpoint = Callable[[WebSocket], Awaitable[None]]


class _Serve:
    """The ASGI app that calls ``endpoint(websocket)``: an object with slots rather
    than a closure, since it lives as long as the socket (about 300 bytes less)."""

    __slots__ = ("_endpoint", "_websocket")

    def __init__(self, endpoint: Endpoint, websocket: WebSocket) -> None:
        self._endpoint = endpoint
        self._websocket = websocket

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return self._endpoint(self._websocket)


def _session(endpoint: Endpoint) -> ASGIApp:
    """``starlette.routing.websocket_session`` with plain functions where it passes on."""

    def app(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        websocket = WebSocket(scope, receive=receive, send=send)
        return wrap_app_handling_exceptions(_Serve(endpoint, websocket), websocket)(
            scope, receive, send
        )

    return app


class SocketRoute(WebSocketRoute):
    """A WebSocket route to a function endpoint ``endpoint(websocket)``."""

    def __init__(self, path: str, endpoint: Endpoint, *, name: str | None = None) -> None:
        super().__init__(path, endpoint, name=name)
        self.app = _session(endpoint)

    def handle(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:  # type: ignore[override]
        return self.app(scope, receive, send)
