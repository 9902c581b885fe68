"""Raw HTTP over a socket, for requests no client library would send."""

from __future__ import annotations

import asyncio
import base64
import os


def upgrade_request(
    path: str, host: str, headers: dict[str, str] | None = None, *, method: str = "GET"
) -> bytes:
    """A WebSocket upgrade request for ``path`` with ``Host: host`` and ``headers``."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def exchange(port: int, data: bytes, *, wait_s: float = 10.0) -> bytes:
    """Send ``data`` to 127.0.0.1:``port``; whatever comes back until the server
    closes or pauses (the head of a response, at least), ``b""`` if nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        received = b""
        async with asyncio.timeout(wait_s):
            while b"\r\n\r\n" not in received:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
        return received
    finally:
        writer.close()


def status_of(response: bytes) -> int | None:
    """The status code of a raw response, ``None`` if there is none."""
    first = response.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[1].isdigit() else None
