"""Connection hygiene through a real server: slow and oversized requests, the socket
cap, file descriptors, invalid UTF-8 (issue 14, item 4)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect

from gateway.transport import GatewayWebSocketProtocol
from tests.support.client import Client
from tests.support.gateway import GatewayFactory
from tests.support.process import free_port, gateway_process
from tests.support.raw import exchange, status_of, upgrade_request


@contextlib.asynccontextmanager
async def idle_sockets(
    port: int, count: int
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    """``count`` connections that never send a byte (half-open requests)."""
    sockets: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(count):
            sockets.append(await asyncio.open_connection("127.0.0.1", port))
        yield sockets
    finally:
        for _, writer in sockets:
            writer.close()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 0.5) == b""
    except TimeoutError:
        return False


async def test_a_trickling_request_is_cut_at_the_header_timeout(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(GATEWAY_HEADER_TIMEOUT_S=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    started = time.monotonic()
    answer = asyncio.ensure_future(reader.read(4096))  # the first bytes the server sends
    for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
        if answer.done() or time.monotonic() - started > 8:
            break  # stop writing: more bytes would make the kernel reset the socket
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.1)
    first = await asyncio.wait_for(answer, 5)
    writer.close()
    assert status_of(first) == 408
    assert time.monotonic() - started < 6


async def test_a_silent_socket_is_closed_at_the_header_timeout(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(GATEWAY_HEADER_TIMEOUT_S=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing said
    writer.close()


async def test_oversized_headers_get_431(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway()
    host = f"127.0.0.1:{gateway.port}"
    many = {f"X-Filler-{i}": "f" * 1000 for i in range(20)}  # 20 KB in short lines
    big_cookie = {"Cookie": "c=" + "x" * 10_000}  # one 10 KB line
    big_jwt = {"Authorization": "Bearer " + "j" * 100_000}
    for headers in (many, big_cookie, big_jwt):
        upgrade = await exchange(gateway.port, upgrade_request("/ws", host, headers))
        assert status_of(upgrade) == 431, list(headers)[0]
        plain = await exchange(
            gateway.port,
            f"GET /sessions HTTP/1.1\r\nHost: {host}\r\n".encode()
            + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
            + b"\r\n",
        )
        if len(str(headers)) > 16384:
            assert status_of(plain) == 431, list(headers)[0]
    ok = await exchange(gateway.port, upgrade_request("/ws", host, {"Cookie": "c=1"}))
    assert status_of(ok) == 101


async def test_half_open_sockets_cannot_starve_the_probes(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_MAX_SOCKETS=16)
    async with idle_sockets(gateway.port, 60) as sockets:
        async with httpx.AsyncClient(base_url=gateway.http_url, timeout=5) as http:
            assert (await http.get("/health")).status_code == 200
            assert (await http.get("/ready")).status_code == 200
        async with await Client.connect(f"{gateway.ws_url}/ws") as client:
            await client.ready()
        evicted = [await closed_by_server(reader) for reader, _ in sockets[:40]]
    assert all(evicted), "the oldest half-open sockets should have been evicted"


async def test_past_the_cap_only_the_probes_answer(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_MAX_SOCKETS=8, GATEWAY_FD_RESERVE=8)
    clients = [await Client.connect(f"{gateway.ws_url}/ws") for _ in range(8)]
    try:
        for client in clients:
            await client.ready()
        async with httpx.AsyncClient(base_url=gateway.http_url, timeout=5) as http:
            assert (await http.get("/health")).status_code == 200
            refused = await http.post("/sessions")
        assert refused.status_code == 503
    finally:
        for client in clients:
            await client.ws.close()


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1024,
    reason="the test itself needs more than 300 file descriptors",
)
def test_health_answers_with_few_file_descriptors() -> None:
    """With 256 descriptors and 300 sockets held open, /health still answers."""
    port = free_port()
    env = {"GATEWAY_STORE": "memory://", "GATEWAY_HEADER_TIMEOUT_S": "30"}

    async def flood_then_probe() -> int:
        async with idle_sockets(port, 300):
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(timeout=5) as http:
                return (await http.get(f"http://127.0.0.1:{port}/health")).status_code

    with gateway_process("--port", str(port), nofile=256, **env) as (_, lines):
        status = asyncio.run(flood_then_probe())
    assert status == 200, "".join(lines)[-2000:]


def test_invalid_utf8_closes_1007_without_a_traceback() -> None:
    port = free_port()

    async def send_bad_text() -> int | None:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.recv()  # session.ready
            await ws.send(b"\xff\xfe not utf-8", text=True)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            return ws.close_code

    with gateway_process("--port", str(port), GATEWAY_STORE="memory://") as (_, lines):
        code = asyncio.run(send_bad_text())
        time.sleep(0.3)
    log = "".join(lines)
    assert code == 1007
    assert "Traceback" not in log
    assert " ERROR " not in log


async def test_an_open_websocket_keeps_its_protocol_state_in_slots(
    start_gateway: GatewayFactory,
) -> None:
    """Every attribute of the WebSocket protocol is a slot: an instance dict of 41
    keys costs about 1.2 KiB more per open socket. This fails when a uvicorn release
    adds an attribute that ``GatewayWebSocketProtocol.__slots__`` does not list."""
    gateway = start_gateway(GATEWAY_STORE="memory://")
    async with connect(f"{gateway.ws_url}/ws") as ws:
        await ws.recv()  # session.ready: handshake done, the session is live
        sockets = [
            c
            for c in gateway.server.server_state.connections
            if isinstance(c, GatewayWebSocketProtocol)
        ]
        assert len(sockets) == 1
        assert vars(sockets[0]) == {}
        assert sockets[0].handshake_complete
