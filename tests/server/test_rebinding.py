"""DNS rebinding and cross-site requests against a default (auth off, loopback) gateway
(issue 14, item 2)."""

from __future__ import annotations

import httpx
import pytest

from gateway.settings import Settings
from tests.support.gateway import GatewayFactory
from tests.support.raw import exchange, status_of, upgrade_request
from tests.support.servers import RunningServer

EVIL = "rebind.evil.com"


@pytest.fixture
def default(start_gateway: GatewayFactory) -> RunningServer:
    return start_gateway(GATEWAY_OFFLINE_DELAY_MS=0)


@pytest.mark.parametrize("path", ["/ws", "/twilio", "/retell/call_1"])
async def test_a_rebound_host_cannot_upgrade(default: RunningServer, path: str) -> None:
    host = f"{EVIL}:{default.port}"
    response = await exchange(
        default.port, upgrade_request(path, host, {"Origin": f"http://{host}"})
    )
    assert status_of(response) == 400


async def test_a_rebound_host_cannot_read_the_api(default: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=default.http_url) as http:
        assert (await http.post("/sessions")).status_code == 201
        foreign = await http.get("/sessions", headers={"Host": f"{EVIL}:{default.port}"})
        assert foreign.status_code == 400
        assert "session" not in foreign.text
        for local in ("localhost", "127.0.0.1", "[::1]"):
            ok = await http.get("/sessions", headers={"Host": f"{local}:{default.port}"})
            assert ok.status_code == 200, local
        for probe in ("/health", "/ready"):  # orchestrators probe by IP: any Host
            assert (await http.get(probe, headers={"Host": "10.0.0.7:8000"})).status_code == 200


@pytest.mark.parametrize("path", ["/twilio", "/retell/call_1", "/ws"])
async def test_every_websocket_route_checks_the_origin(default: RunningServer, path: str) -> None:
    host = f"127.0.0.1:{default.port}"
    foreign = await exchange(
        default.port, upgrade_request(path, host, {"Origin": "https://evil.example"})
    )
    assert status_of(foreign) == 403
    assert b"origin_not_allowed" in foreign
    same = await exchange(default.port, upgrade_request(path, host, {"Origin": f"http://{host}"}))
    assert status_of(same) == 101


async def test_cross_site_state_changes_are_refused(default: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=default.http_url) as http:
        page = {"Origin": "https://evil.example"}
        post = await http.post("/sessions", headers=page)
        assert (post.status_code, post.json()["error"]["code"]) == (403, "origin_not_allowed")
        made = await http.post("/sessions")  # curl and servers send no Origin
        assert made.status_code == 201
        sid = made.json()["session_id"]
        assert (await http.delete(f"/sessions/{sid}", headers=page)).status_code == 403
        assert (
            await http.post("/v1/chat/completions", headers=page, json={"messages": []})
        ).status_code == 403
        same = {"Origin": default.http_url}
        assert (await http.post("/sessions", headers=same)).status_code == 201
        assert (await http.delete(f"/sessions/{sid}", headers=same)).status_code == 204
        assert (await http.post("/sessions", headers={"Origin": "null"})).status_code == 403
        no_origin = {"Sec-Fetch-Site": "cross-site"}  # a browser that left Origin out
        assert (await http.post("/sessions", headers=no_origin)).status_code == 403


async def test_behind_a_proxy_the_public_origin_connects(start_gateway: GatewayFactory) -> None:
    """nginx's default ``proxy_pass`` sends ``Host: <upstream>``; the page's origin
    is the public URL."""
    gateway = start_gateway(GATEWAY_PUBLIC_URL="https://voice.example.com")
    upstream = f"127.0.0.1:{gateway.port}"
    page = {"Origin": "https://voice.example.com"}
    response = await exchange(gateway.port, upgrade_request("/ws", upstream, page))
    assert status_of(response) == 101
    public = await exchange(gateway.port, upgrade_request("/ws", "voice.example.com", page))
    assert status_of(public) == 101
    other = await exchange(
        gateway.port, upgrade_request("/ws", upstream, {"Origin": "https://evil.example"})
    )
    assert status_of(other) == 403


def test_allowed_hosts_defaults() -> None:
    from gateway.hosts import allowed_hosts

    def hosts(**env: str) -> list[str] | None:
        return allowed_hosts(Settings(_env_file=None, **env))  # type: ignore[arg-type]

    assert hosts() == ["localhost", "127.0.0.1", "[::1]"]
    assert hosts(GATEWAY_HOST="0.0.0.0") is None  # with a start-up warning
    assert hosts(GATEWAY_HOST="0.0.0.0", GATEWAY_PUBLIC_URL="https://v.example") == [
        "localhost",
        "127.0.0.1",
        "[::1]",
        "v.example",
    ]
    assert hosts(GATEWAY_ALLOWED_HOSTS="a.example, *.b.example") == ["a.example", "*.b.example"]
    assert hosts(GATEWAY_ALLOWED_HOSTS="*") is None


async def test_allowed_hosts_setting(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_ALLOWED_HOSTS="gateway.internal")
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        assert (
            await http.get("/sessions", headers={"Host": "gateway.internal"})
        ).status_code == 200
        assert (await http.get("/sessions")).status_code == 400
