"""The providers' HTTP transport: requests spread over small pools, slots given back."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from gateway.providers.http import POOL_LIMITS, ShardedTransport, sharded_transport
from tests.support.servers import RunningServer, running


class Streams:
    """A server whose responses stream until :attr:`release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.peers: set[tuple[str, int]] = set()

    def app(self) -> Starlette:
        async def stream(request: Request) -> StreamingResponse:
            if request.client is not None:
                self.peers.add((request.client.host, request.client.port))

            async def body() -> AsyncIterator[bytes]:
                yield b"first\n"
                await asyncio.to_thread(self.release.wait, 10)
                yield b"last\n"

            return StreamingResponse(body())

        return Starlette(routes=[Route("/stream", stream)])


@pytest.fixture
def streams() -> Iterator[tuple[Streams, RunningServer]]:
    server = Streams()
    with running(server.app()) as running_server:
        try:
            yield server, running_server
        finally:
            server.release.set()  # no stream outlives its test


def sharded(size: int) -> ShardedTransport:
    return ShardedTransport(lambda: httpx2.AsyncHTTPTransport(limits=POOL_LIMITS), shard_size=size)


async def test_requests_in_flight_spread_over_pools_of_the_shard_size(
    streams: tuple[Streams, RunningServer],
) -> None:
    server, running_server = streams
    transport = sharded(4)
    async with httpx2.AsyncClient(transport=transport, base_url=running_server.http_url) as http:

        async def one() -> bytes:
            async with http.stream("GET", "/stream") as response:
                return b"".join([part async for part in response.aiter_bytes()])

        calls = [asyncio.ensure_future(one()) for _ in range(10)]
        for _ in range(200):
            if sum(transport.in_flight()) == 10:
                break
            await asyncio.sleep(0.01)
        assert transport.in_flight() == [4, 4, 2]
        server.release.set()
        assert await asyncio.gather(*calls) == [b"first\nlast\n"] * 10
        assert transport.in_flight() == [0, 0, 0]

        # Connections are kept and reused: a second round opens none and no new pool.
        peers = set(server.peers)
        assert await asyncio.gather(*(one() for _ in range(10))) == [b"first\nlast\n"] * 10
        assert transport.pools == 3
        assert server.peers == peers


async def test_a_response_closed_early_or_a_failed_request_gives_its_slot_back(
    streams: tuple[Streams, RunningServer],
) -> None:
    _, running_server = streams
    transport = sharded(2)
    async with httpx2.AsyncClient(transport=transport, base_url=running_server.http_url) as http:
        async with http.stream("GET", "/stream") as response:
            async for _ in response.aiter_bytes():
                break  # hang up mid-stream
        assert transport.in_flight() == [0]
        with pytest.raises(httpx2.ConnectError):
            await http.get("http://127.0.0.1:1/")  # nothing listens there
        assert transport.in_flight() == [0]


def test_a_shard_holds_at_least_one_request() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        sharded(0)


async def test_the_pools_share_one_tls_context_made_with_the_transport(
    streams: tuple[Streams, RunningServer],
) -> None:
    # A context per pool loads the CA bundle on the event loop (~35 ms) whenever load
    # opens a new pool; the providers' transport makes one up front and shares it.
    server, running_server = streams
    tls = ssl.create_default_context()
    transport = sharded_transport(tls, shard_size=1)
    async with httpx2.AsyncClient(transport=transport, base_url=running_server.http_url) as http:

        async def one() -> bytes:
            async with http.stream("GET", "/stream") as response:
                return b"".join([part async for part in response.aiter_bytes()])

        calls = [asyncio.ensure_future(one()) for _ in range(3)]
        for _ in range(200):
            if sum(transport.in_flight()) == 3:
                break
            await asyncio.sleep(0.01)
        server.release.set()
        assert await asyncio.gather(*calls) == [b"first\nlast\n"] * 3
        assert transport.pools == 3
        contexts = {id(shard.transport._pool._ssl_context) for shard in transport._shards}
        assert contexts == {id(tls)}
