"""CORS for the HTTP API (GATEWAY_CORS_ORIGINS) and OPTIONS answered."""

from __future__ import annotations

import httpx
import pytest

from gateway.settings import SettingsError, load_settings
from tests.support.gateway import GatewayFactory

APP = "https://app.example.com"


async def test_cors_lets_a_configured_origin_call_the_api(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_CORS_ORIGINS=f"{APP},https://other.example")
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        preflight = await http.options(
            "/sessions",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        created = await http.post("/sessions", headers={"Origin": APP})
        foreign = await http.post("/sessions", headers={"Origin": "https://evil.example"})
        bad_preflight = await http.options(
            "/sessions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in preflight.headers
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == APP
    assert "x-request-id" in created.headers["access-control-expose-headers"]
    assert "access-control-allow-origin" not in foreign.headers
    assert foreign.status_code == 403  # the cross-site guard still refuses other pages
    assert bad_preflight.status_code == 400


async def test_options_is_answered_without_cors(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway()
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        sessions = await http.options("/sessions")
        one = await http.options("/sessions/s_abc")
        health = await http.options("/health")
    assert sessions.status_code == 204
    assert sessions.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    assert one.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"
    assert health.status_code == 204
    assert "access-control-allow-origin" not in sessions.headers


def test_a_malformed_cors_origin_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CORS_ORIGINS", "app.example.com")
    with pytest.raises(SettingsError, match="GATEWAY_CORS_ORIGINS"):
        load_settings(_env_file=None)
