"""Every route counts against ``GATEWAY_MAX_CONNECTIONS``: the platform routes
(``/twilio``, ``/retell/{call_id}``) as well as ``/ws``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.client import Client
from tests.support.faults import FaultyFactory, FaultyProvider, faulty_gateways, wait_until

SETUP: dict[str, Any] = {
    "type": "setup",
    "sessionId": "VX00000000000000000000000000000009",
    "accountSid": "AC00000000000000000000000000000009",
    "parentCallSid": "",
    "callSid": "CA00000000000000000000000000000009",
    "from": "+18005550100",
    "to": "+18005550101",
    "callType": "PSTN",
    "direction": "inbound",
    "callStatus": "RINGING",
    "customParameters": {},
}


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[FaultyFactory]:
    with faulty_gateways(tmp_path) as start:
        yield start


async def close_code(url: str, first: dict[str, Any] | None = None) -> int | None:
    """Connect (sending ``first`` if the server has not closed yet); the close code."""
    client = await Client.connect(url)
    if first is not None:
        with contextlib.suppress(ConnectionClosed):  # refused before it was sent
            await client.send(first)
    return await client.close_code()


async def test_platform_routes_count_against_the_connection_limit(
    gateways: FaultyFactory,
) -> None:
    gateway = gateways(provider=FaultyProvider(), GATEWAY_MAX_CONNECTIONS=1)
    guard = gateway.app.state.guard
    base = gateway.ws_url
    async with await Client.connect(f"{base}/ws") as native:
        await native.ready()
        assert await close_code(f"{base}/twilio", SETUP) == 1013
        assert await close_code(f"{base}/retell/call-1") == 1013
        assert await close_code(f"{base}/ws") == 1013
        await native.send({"type": "ping", "id": "still-served"})
        assert (await native.recv())["id"] == "still-served"
    await wait_until(lambda: guard.connections.open == 0)

    # A platform call holds the one slot just the same.
    async with await Client.connect(f"{base}/twilio") as call:
        await call.send(SETUP)
        await call.send({"type": "prompt", "voicePrompt": "Hello", "lang": "en-US", "last": True})
        frames = await call.recv_until(lambda f: f["type"] == "text" and f["last"])
        assert "".join(f["token"] for f in frames).strip()
        assert await close_code(f"{base}/ws") == 1013
        assert await close_code(f"{base}/retell/call-2") == 1013
    await wait_until(lambda: guard.connections.open == 0)
    async with await Client.connect(f"{base}/retell/call-3") as retell:
        opening = [await retell.recv(), await retell.recv()]
        assert opening[0]["response_type"] == "config"
        assert await close_code(f"{base}/twilio", SETUP) == 1013


async def test_every_route_closes_an_idle_connection_4000(gateways: FaultyFactory) -> None:
    gateway = gateways(provider=FaultyProvider(), GATEWAY_IDLE_TIMEOUT_S=0.5)
    base = gateway.ws_url
    codes = await asyncio.gather(
        close_code(f"{base}/ws"),
        close_code(f"{base}/twilio", SETUP),
        close_code(f"{base}/retell/call-idle"),
    )
    assert codes == [4000, 4000, 4000]
