"""A small test client for the native protocol over a real WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

RECV_TIMEOUT_S = 10.0


class Client:
    """Sends frames and reads server events (dicts), with a timeout on every read."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> Client:
        ws = await connect(url, open_timeout=RECV_TIMEOUT_S, **kwargs)
        return cls(ws)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            frame = orjson.dumps(frame).decode()
        await self.ws.send(frame)

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(RECV_TIMEOUT_S):
            raw = await self.ws.recv()
        event: dict[str, Any] = orjson.loads(raw)
        self.received.append(event)
        return event

    async def recv_until(self, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Read events up to and including the first one for which ``done`` is true."""
        events = []
        while True:
            event = await self.recv()
            events.append(event)
            if done(event):
                return events

    async def recv_type(self, type_: str) -> list[dict[str, Any]]:
        return await self.recv_until(lambda e: e["type"] == type_)

    async def turn(self, turn_id: str | None = None) -> list[dict[str, Any]]:
        """Events up to the ``response.end`` (of ``turn_id`` when given)."""
        return await self.recv_until(
            lambda e: e["type"] == "response.end" and turn_id in (None, e["turn_id"])
        )

    async def close_code(self) -> int | None:
        """Read until the server closes the connection; the close code it sent."""
        try:
            while True:
                await self.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def ready(self) -> dict[str, Any]:
        event = await self.recv()
        assert event["type"] == "session.ready", event
        return event
