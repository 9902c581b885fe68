"""Authentication, origin checks and limits on the native routes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import InvalidStatus

from gateway.settings import SettingsError, load_settings
from tests.support.client import Client
from tests.support.gateway import GatewayFactory
from tests.support.process import free_port, gateway_process
from tests.support.servers import RunningServer

ALICE = "alice-key-0123456789"
BOB = "bob-key-0123456789ab"
KEYS = f"alice:{ALICE},bob:{BOB}"


async def refused_status(url: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await Client.connect(url, **kwargs)
    return refused.value.response.status_code


@pytest.fixture
def keyed(start_gateway: GatewayFactory) -> RunningServer:
    return start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_API_KEYS=KEYS)


async def test_websocket_credentials_from_header_query_or_subprotocol(keyed: RunningServer) -> None:
    url = f"{keyed.ws_url}/ws"
    assert await refused_status(url) == 401
    assert await refused_status(url, additional_headers={"Authorization": "Bearer nope"}) == 401
    by_header = await Client.connect(url, additional_headers={"Authorization": f"Bearer {ALICE}"})
    by_query = await Client.connect(f"{url}?token={ALICE}")
    by_proto = await Client.connect(url, subprotocols=["voice-gateway.v1", f"bearer.{ALICE}"])
    for client in (by_header, by_query, by_proto):
        assert (await client.ready())["type"] == "session.ready"
        await client.ws.close()
    assert by_proto.ws.subprotocol == "voice-gateway.v1"


async def test_sessions_belong_to_their_principal(keyed: RunningServer) -> None:
    alice_ws = await Client.connect(f"{keyed.ws_url}/ws?token={ALICE}")
    ready = await alice_ws.ready()
    sid, token = ready["session_id"], ready["resume_token"]
    await alice_ws.ws.close()
    as_bob = f"{keyed.ws_url}/ws?token={BOB}&session_id={sid}&resume_token={token}"
    intruder = await Client.connect(as_bob)
    assert await intruder.close_code() == 4404
    async with httpx.AsyncClient(base_url=keyed.http_url) as http:
        alice = {"Authorization": f"Bearer {ALICE}"}
        bob = {"Authorization": f"Bearer {BOB}"}
        assert (await http.get("/sessions")).status_code == 401
        assert [
            s["session_id"] for s in (await http.get("/sessions", headers=alice)).json()["sessions"]
        ] == [sid]
        assert (await http.get("/sessions", headers=bob)).json()["sessions"] == []
        assert (await http.get(f"/sessions/{sid}", headers=bob)).status_code == 404
        assert (await http.delete(f"/sessions/{sid}", headers=bob)).status_code == 404
        assert (await http.get(f"/sessions/{sid}", headers=alice)).status_code == 200
        assert (await http.get("/health")).status_code == 200
    owner = await Client.connect(
        f"{keyed.ws_url}/ws?token={ALICE}&session_id={sid}&resume_token={token}"
    )
    assert (await owner.ready())["resumed"] is True
    await owner.ws.close()


def rsa_pair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


async def test_jwt_hs256_and_rs256(start_gateway: GatewayFactory) -> None:
    secret = "a-long-shared-secret-for-hs256-tests"
    hs = start_gateway(GATEWAY_JWT_SECRET=secret, GATEWAY_JWT_AUDIENCE="voice")
    now = int(time.time())
    good = jwt.encode({"sub": "carol", "aud": "voice", "exp": now + 60}, secret, "HS256")
    expired = jwt.encode({"sub": "carol", "aud": "voice", "exp": now - 60}, secret, "HS256")
    other_aud = jwt.encode({"sub": "carol", "aud": "else", "exp": now + 60}, secret, "HS256")
    forged = jwt.encode({"sub": "carol", "aud": "voice", "exp": now + 60}, "x" * 40, "HS256")
    url = f"{hs.ws_url}/ws"
    for bad in (expired, other_aud, forged):
        assert await refused_status(f"{url}?token={bad}") == 401
    client = await Client.connect(f"{url}?token={good}")
    await client.ready()
    await client.ws.close()

    private, public = rsa_pair()
    rs = start_gateway(GATEWAY_JWT_PUBLIC_KEY=public)
    token = jwt.encode({"sub": "dave", "exp": now + 60}, private, "RS256")
    client = await Client.connect(
        f"{rs.ws_url}/ws", additional_headers={"Authorization": f"Bearer {token}"}
    )
    await client.ready()
    await client.ws.close()
    assert await refused_status(f"{rs.ws_url}/ws?token={good}") == 401


async def test_origin_checks(start_gateway: GatewayFactory) -> None:
    open_gw = start_gateway()
    url = f"{open_gw.ws_url}/ws"
    assert await refused_status(url, origin="http://evil.example") == 403
    same = await Client.connect(url, origin=f"http://127.0.0.1:{open_gw.port}")
    await same.ready()
    await same.ws.close()
    listed = start_gateway(GATEWAY_ALLOWED_ORIGINS="https://app.example")
    ok = await Client.connect(f"{listed.ws_url}/ws", origin="https://app.example")
    await ok.ready()
    await ok.ws.close()
    assert await refused_status(f"{listed.ws_url}/ws", origin="https://other.example") == 403
    no_origin = await Client.connect(f"{listed.ws_url}/ws")
    await no_origin.ready()
    await no_origin.ws.close()


async def test_over_the_rate_gets_an_error_and_stays_open(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_RATE_PER_S=0.001, GATEWAY_RATE_BURST=2, GATEWAY_HEARTBEAT_S=0.2)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        for i in range(3):
            await client.send({"type": "ping", "id": i})
        replies = [await client.recv() for _ in range(3)]
        beat = await client.recv()
    assert [r["type"] for r in replies] == ["pong", "pong", "error"]
    assert (replies[2]["code"], replies[2]["fatal"]) == ("rate_limited", False)
    assert beat["type"] == "heartbeat"


async def test_a_flood_closes_the_connection(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_RATE_PER_S=0.001, GATEWAY_RATE_BURST=2)
    client = await Client.connect(f"{gateway.ws_url}/ws")
    await client.ready()
    for i in range(20):
        await client.send({"type": "ping", "id": i})
    assert await client.close_code() == 1008
    assert any(e.get("code") == "rate_limited" for e in client.received)


async def test_connection_and_session_limits(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(
        GATEWAY_API_KEYS=KEYS,
        GATEWAY_MAX_CONNECTIONS_PER_PRINCIPAL=1,
        GATEWAY_MAX_SESSIONS_PER_PRINCIPAL=2,
    )
    url = f"{gateway.ws_url}/ws"
    first = await Client.connect(f"{url}?token={ALICE}")
    await first.ready()
    second = await Client.connect(f"{url}?token={ALICE}")
    assert await second.close_code() == 1013
    other = await Client.connect(f"{url}?token={BOB}")
    await other.ready()
    await other.ws.close()
    await first.ws.close()
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        created = await http.post("/sessions", headers={"Authorization": f"Bearer {ALICE}"})
        over = await http.post("/sessions", headers={"Authorization": f"Bearer {ALICE}"})
    assert created.status_code == 201
    assert (over.status_code, over.json()["error"]["code"]) == (429, "too_many_sessions")
    third = await Client.connect(f"{url}?token={ALICE}")
    assert await third.close_code() == 4429


async def test_idle_connections_are_closed(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_IDLE_TIMEOUT_S=0.3)
    client = await Client.connect(f"{gateway.ws_url}/ws")
    await client.ready()
    assert await client.close_code() == 4000


def test_a_public_bind_without_auth_warns_loudly() -> None:
    port = free_port()
    with gateway_process("--host", "0.0.0.0", "--port", str(port), GATEWAY_STORE="memory://") as (
        _,
        lines,
    ):
        pass
    assert "NO authentication" in "".join(lines)


@pytest.mark.parametrize("secret", ["x", "s" * 31, "é" * 15])
def test_short_hs256_secrets_are_refused(secret: str) -> None:
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        load_settings(_env_file=None, GATEWAY_JWT_SECRET=secret)
    load_settings(_env_file=None, GATEWAY_JWT_SECRET="s" * 32)


def test_start_up_says_how_each_route_is_protected() -> None:
    port = free_port()
    env = {"GATEWAY_STORE": "memory://", "GATEWAY_API_KEYS": KEYS, "RETELL_SECRET": "r" * 20}
    with gateway_process("--port", str(port), **env) as (_, lines):
        pass
    log = "".join(lines)
    assert "route /ws: protected by API keys; origins same origin" in log
    assert "route /retell: protected by a secret path segment" in log
    for route, variable in (
        ("/twilio", "TWILIO_AUTH_TOKEN"),
        ("/layercode/agent", "LAYERCODE_WEBHOOK_SECRET"),
        ("/v1/chat/completions", "OPENAI_COMPAT_API_KEYS"),
    ):
        [line] = [x for x in lines if f"route {route}:" in x]
        assert "WARNING" in line
        assert f"OPEN, no credential ({variable} unset)" in line
    assert "hosts: localhost, 127.0.0.1, [::1]" in log
