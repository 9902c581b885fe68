"""A scripted hostile session: bad tokens, foreign origins, floods, garbage frames,
invalid UTF-8 and a client that never reads, while someone else chats normally."""

from __future__ import annotations

import asyncio
import os
import re
import struct
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.core.codes import ErrorCode
from tests.support.client import Client
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

KEY = "tester:normal-user-key-0123"
TOKEN = "normal-user-key-0123"
GARBAGE: list[str | bytes] = [
    "[" * 3000,
    "{}",
    '{"type":42}',
    '{"type":"user.message","text":{"$gt":""}}',
    '{"type":"interrupt","turn_id":["x"]}',
    '{"type":"playback.ack","turn_id":"t9","index":1e308}',
    "\u0000\u0001\u0002",
    "\ud7ff" * 1000,
    b"\xff\xfe\x00",
    '{"type":"session.update","language":"' + "a" * 100 + '"}',
    '{"type":"user.message","text":"' + "x" * 5000 + '"}',
]


async def normal_chat(url: str, turns: int) -> list[dict[str, Any]]:
    async with await Client.connect(url) as client:
        ready = await client.ready()
        for i in range(turns):
            await client.send(
                {"type": "user.message", "text": f"Normal question {i}", "id": f"n{i}"}
            )
            events = await client.turn()
            assert events[-1]["status"] == "completed", events[-1]
            assert f"Normal question {i}" in events[-1]["text"]
    assert {e["session_id"] for e in client.received} == {ready["session_id"]}
    return client.received


async def bad_credentials(url: str) -> list[int]:
    statuses = []
    for attempt in [f"{url}?token=wrong-{i}" for i in range(5)] + [url]:
        try:
            ws = await connect(attempt)
        except InvalidStatus as refused:
            statuses.append(refused.response.status_code)
        else:
            await ws.close()
            statuses.append(101)
    for origin in ("https://evil.example", "null", "http://127.0.0.1.evil.example"):
        try:
            ws = await connect(f"{url}?token={TOKEN}", origin=origin)  # type: ignore[arg-type]
        except InvalidStatus as refused:
            statuses.append(refused.response.status_code)
        else:
            await ws.close()
            statuses.append(101)
    return statuses


async def garbage(url: str) -> list[dict[str, Any]]:
    """Each frame, then a ping: the pong proves the connection survived it."""
    errors = []
    async with await Client.connect(url) as client:
        await client.ready()
        for i, frame in enumerate(GARBAGE):
            await client.send(frame)
            await client.send({"type": "ping", "id": f"after-{i}"})
            replies = await client.recv_until(lambda e, i=i: e.get("id") == f"after-{i}")
            errors += [e for e in replies if e["type"] == "error"]
    return errors


async def flood(url: str) -> int | None:
    client = await Client.connect(url)
    await client.ready()
    for i in range(400):
        await client.send({"type": "ping", "id": i})
    return await client.close_code()


#: A server close frame (unmasked) whose code is 1007.
CLOSE_1007 = re.compile(rb"\x88.\x03\xef", re.DOTALL)


async def invalid_utf8(gateway: RunningServer) -> bytes:
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    raw = b""
    try:
        writer.write(
            (
                f"GET /ws?token={TOKEN} HTTP/1.1\r\nHost: {gateway.host}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        async with asyncio.timeout(10):
            raw = await reader.readuntil(b'"resumed":false}')
            payload, mask = b"\xc3\x28 not utf-8", os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            writer.write(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
            # The gateway closes 1007 (and logs no traceback).
            while not CLOSE_1007.search(raw.partition(b"\r\n\r\n")[2]):
                chunk = await reader.read(4096)
                if not chunk:
                    break
                raw += chunk
    finally:
        writer.close()
        await writer.wait_closed()
    return raw


async def never_reads(url: str) -> None:
    ws = await connect(url, max_queue=1, close_timeout=0.5)
    for i in range(50):
        await ws.send(f"Say something long please {i}")
    await ws.close()


async def test_a_hostile_session_leaves_everyone_else_served(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(
        GATEWAY_API_KEYS=KEY,
        GATEWAY_OFFLINE_DELAY_MS=2,
        GATEWAY_RATE_BURST=50,  # above the garbage client's 22 frames, far below the flood
        GATEWAY_SEND_QUEUE=64,
    )
    url = f"{gateway.ws_url}/ws?token={TOKEN}"
    results = await asyncio.gather(
        normal_chat(url, 6),
        bad_credentials(f"{gateway.ws_url}/ws"),
        garbage(url),
        flood(url),
        invalid_utf8(gateway),
        never_reads(url),
    )
    _, statuses, errors, flood_code, raw, _ = results
    assert statuses == [401] * 6 + [403] * 3
    codes = {ErrorCode(e["code"]) for e in errors}
    assert not any(e["fatal"] for e in errors)
    assert len(errors) == len(GARBAGE) - 1  # "\ud7ff" * 1000 is valid text: a turn
    assert codes == {
        ErrorCode.INVALID_JSON,
        ErrorCode.MISSING_TYPE,
        ErrorCode.INVALID_FIELD,
        ErrorCode.EMPTY_TEXT,
        ErrorCode.BINARY_FRAME,
        ErrorCode.TEXT_TOO_LONG,
    }
    assert flood_code == 1008
    assert b"HTTP/1.1 101" in raw
    assert CLOSE_1007.search(raw.partition(b"\r\n\r\n")[2])
    await normal_chat(url, 2)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{gateway.http_url}/health")).json()["status"] == "ok"
