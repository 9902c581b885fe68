"""The HTTP transport a provider hands its SDK: requests spread over small pools.

httpcore2's connection pool (under httpx2, the SDKs' HTTP library) makes one pass over
every connection it holds on each request and on each response's end: it asks each
whether it is closed, expired (a ``poll(2)`` of each idle socket) or available. A
voice gateway streams one long response per turn in flight, so the pool holds about
as many connections as there are concurrent turns, and that pass grows with them:
at 100 concurrent turns it was the largest single item of the gateway's CPU profile
(about 18%), and at 300 about 40% of a worker's samples.

:class:`ShardedTransport` keeps several pools of at most :data:`SHARD_SIZE`
requests in flight each and sends each request to the first pool with room (a new
one when all are full), so every pass walks one small pool. Connections are still
reused within a pool; pools that fall idle keep their connections until the
keep-alive expiry closes them. Hand-written: httpx2 has no such transport, and the
fix upstream (an incrementally kept pool) is not released.

Every pool shares one TLS context, made with the transport (when the provider is
built, before the server listens): ``httpx2.AsyncHTTPTransport`` otherwise builds its
own and loads the CA bundle, about 35 ms on the event loop each time load opens a
new pool.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from typing import Final

import httpx2

#: Requests in flight per pool.
SHARD_SIZE: Final = 16


class _Shard:
    """One pool and how many of its responses are open."""

    __slots__ = ("in_flight", "transport")

    def __init__(self, transport: httpx2.AsyncHTTPTransport) -> None:
        self.transport = transport
        self.in_flight = 0


class _Released(httpx2.AsyncByteStream):
    """A response body that gives its pool's slot back once, when it is closed."""

    def __init__(self, inner: httpx2.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._inner:
            yield part

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ShardedTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport over pools of at most ``shard_size`` requests in flight;
    ``make`` builds each pool's transport (limits, timeouts, TLS as the caller wants)."""

    def __init__(
        self,
        make: Callable[[], httpx2.AsyncHTTPTransport],
        *,
        shard_size: int = SHARD_SIZE,
    ) -> None:
        if shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        self._make = make
        self._shard_size = shard_size
        self._shards: list[_Shard] = []

    @property
    def pools(self) -> int:
        """How many pools there are now."""
        return len(self._shards)

    def in_flight(self) -> list[int]:
        """Open responses per pool."""
        return [shard.in_flight for shard in self._shards]

    def _shard(self) -> _Shard:
        for shard in self._shards:
            if shard.in_flight < self._shard_size:
                return shard
        shard = _Shard(self._make())
        self._shards.append(shard)
        return shard

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        shard = self._shard()
        shard.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                shard.in_flight -= 1

        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            release()
            raise
        stream = response.stream
        if not isinstance(stream, httpx2.AsyncByteStream):
            release()
            return response
        response.stream = _Released(stream, release)
        return response

    async def aclose(self) -> None:
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.transport.aclose()


#: Each pool keeps every connection it opened while turns come (idle ones are closed
#: after 30 s); the shard size bounds how many requests share one pool.
POOL_LIMITS: Final = httpx2.Limits(
    max_connections=None, max_keepalive_connections=None, keepalive_expiry=30.0
)


def sharded_transport(
    tls: ssl.SSLContext | None = None, *, shard_size: int = SHARD_SIZE
) -> ShardedTransport:
    """The transport both providers give their SDK's ``httpx2`` client: its pools share
    ``tls`` (by default one context made now, trusting the environment's CA settings
    as httpx2 does)."""
    context = tls if tls is not None else httpx2.create_ssl_context()
    return ShardedTransport(
        lambda: httpx2.AsyncHTTPTransport(verify=context, limits=POOL_LIMITS),
        shard_size=shard_size,
    )
