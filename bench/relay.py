"""The raw-relay baseline: the least a gateway can do, measured beside it.

WebSocket in, one httpx2 stream to the (fake) Gemini REST API per turn, one WebSocket
frame per model piece out. No chunker, no store, no SDK, no replay, no validation:
a raw ASGI app under the same uvicorn and WebSocket implementation as the gateway,
speaking just enough of the native protocol for the benchmark's client
(``session.ready``, ``response.tts`` per piece, ``response.end``, ``pong``). It keeps
the conversation's history (as REST JSON, appended once per message) because the
model must be sent it.

    .venv/bin/python bench/relay.py --model-url http://127.0.0.1:PORT [--model bench]

prints ``PORT <n>`` once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from typing import Any

import httpx2
import orjson
import uvicorn


class Relay:
    """One raw ASGI app; one history and at most one turn per connection."""

    def __init__(self, model_url: str, model: str) -> None:
        self._url = f"{model_url}/v1beta/models/{model}:streamGenerateContent?alt=sse"
        self._http: httpx2.AsyncClient | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
                    self._http = httpx2.AsyncClient(limits=limits, timeout=60)
                    await send({"type": "lifespan.startup.complete"})
            if self._http is not None:
                await self._http.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await self._connection(receive, send)

    async def _connection(self, receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": '{"type":"session.ready","seq":0}'})
        history: list[dict[str, Any]] = []
        turn: asyncio.Task[None] | None = None
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    continue
                if text.startswith("{"):
                    event = orjson.loads(text)
                    if event.get("type") == "ping":
                        pong = orjson.dumps({"type": "pong", "id": event.get("id")}).decode()
                        await send({"type": "websocket.send", "text": pong})
                        continue
                    text = event.get("text", "")
                if turn is not None and not turn.done():
                    turn.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await turn
                history.append({"role": "user", "parts": [{"text": text}]})
                turn = asyncio.create_task(self._turn(history, send))
        finally:
            if turn is not None and not turn.done():
                turn.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await turn

    async def _turn(self, history: list[dict[str, Any]], send: Any) -> None:
        assert self._http is not None
        body = orjson.dumps({"contents": history})
        parts: list[str] = []
        status = "failed"
        try:
            async with self._http.stream("POST", self._url, content=body) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = orjson.loads(line[6:])
                    for candidate in event.get("candidates", ())[:1]:
                        for part in candidate.get("content", {}).get("parts", ()):
                            if piece := part.get("text"):
                                parts.append(piece)
                                frame = orjson.dumps({"type": "response.tts", "text": piece})
                                await send({"type": "websocket.send", "text": frame.decode()})
            status = "completed"
        finally:
            history.append({"role": "model", "parts": [{"text": "".join(parts)}]})
            end = orjson.dumps({"type": "response.end", "status": status}).decode()
            with contextlib.suppress(Exception):
                await send({"type": "websocket.send", "text": end})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-url", required=True)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    config = uvicorn.Config(
        Relay(args.model_url, args.model),
        ws="websockets-sansio",
        log_level="warning",
        lifespan="on",
        backlog=4096,
    )
    sys.stdout.write(f"PORT {sock.getsockname()[1]}\n")
    sys.stdout.flush()
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
