"""WebSocket options the gateway sets on uvicorn (gateway.app.uvicorn_options)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.client import Client
from tests.support.gateway import GatewayFactory


@pytest.mark.parametrize(
    ("env", "extensions"),
    [({}, None), ({"GATEWAY_WS_DEFLATE": "true"}, "permessage-deflate")],
    ids=["default", "deflate"],
)
async def test_permessage_deflate_is_accepted_only_when_configured(
    start_gateway: GatewayFactory, env: dict[str, Any], extensions: str | None
) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, **env)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:  # offers deflate
        header = client.ws.response.headers.get("Sec-WebSocket-Extensions")
        assert (header.split(";")[0] if header else None) == extensions
        assert (await client.recv())["type"] == "session.ready"
        await client.send({"type": "user.message", "text": "Hello"})
        events = await client.recv_until(lambda e: e["type"] == "response.end")
    assert events[-1]["status"] == "completed"
