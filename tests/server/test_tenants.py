"""Separate namespaces: a caller can never reach a platform's sessions (issue 14, item 1)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import InvalidStatus

from gateway.settings import SettingsError, load_settings
from gateway.tenants import session_kind
from tests.support.client import Client
from tests.support.gateway import ADMIN, GatewayFactory
from tests.support.servers import RunningServer

PIN = "my PIN is 1234"
KEY = "twilio-named-key-0123456789"
JWT_SECRET = "a-shared-secret-of-at-least-32-bytes!"


async def place_call(
    gateway: RunningServer, sid: str = "CA00000000000000000000000000000009"
) -> None:
    """A Twilio call in which the caller says their PIN."""
    async with await Client.connect(f"{gateway.ws_url}/twilio") as call:
        await call.send({"type": "setup", "callSid": sid})
        await call.send({"type": "prompt", "voicePrompt": PIN, "lang": "en-US", "last": True})
        await call.recv_until(lambda f: f["type"] == "text" and f["last"])


def platform_ids(body: dict[str, Any]) -> list[str]:
    return [s["session_id"] for s in body["sessions"] if s["kind"] != "client"]


@pytest.mark.parametrize("name", ["twilio", "retell", "layercode", "Twilio", "platform:twilio"])
def test_a_caller_named_like_a_platform_is_refused_at_start_up(name: str) -> None:
    with pytest.raises(SettingsError, match="reserved"):
        load_settings(_env_file=None, GATEWAY_API_KEYS=f"{name}:{KEY}")
    with pytest.raises(SettingsError, match="reserved"):
        load_settings(_env_file=None, GATEWAY_ADMIN_KEYS=f"{name}:{KEY}")


async def test_with_auth_off_platform_sessions_are_not_listed_read_or_deleted(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0)
    await place_call(gateway)
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        anyone = (await http.get("/sessions")).json()
        admin = (await http.get("/sessions", headers=ADMIN)).json()
        [call_id] = platform_ids(admin)
        assert [s["kind"] for s in admin["sessions"]] == ["twilio"]
        assert anyone["sessions"] == []
        assert (await http.get(f"/sessions/{call_id}")).status_code == 404
        assert (await http.delete(f"/sessions/{call_id}")).status_code == 404
        read = await http.get(f"/sessions/{call_id}", headers=ADMIN)
        assert read.status_code == 200
        assert read.json()["kind"] == "twilio"
        assert read.json()["turns"][0]["user_text"] == PIN
        created = await http.post("/sessions")
        listed = (await http.get("/sessions")).json()["sessions"]
        assert [(s["session_id"], s["kind"]) for s in listed] == [
            (created.json()["session_id"], "client")
        ]
        assert (await http.delete(f"/sessions/{call_id}", headers=ADMIN)).status_code == 204


async def test_a_jwt_subject_named_like_a_platform_is_refused(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_JWT_SECRET=JWT_SECRET)
    await place_call(gateway)
    exp = int(time.time()) + 60
    for sub in ("twilio", "retell", "layercode", "platform:twilio"):
        token = jwt.encode({"sub": sub, "exp": exp}, JWT_SECRET, "HS256")
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            listed = await http.get("/sessions", headers={"Authorization": f"Bearer {token}"})
        assert (listed.status_code, listed.json()["error"]["code"]) == (403, "reserved_principal")
        with pytest.raises(InvalidStatus) as refused:
            await Client.connect(f"{gateway.ws_url}/ws?token={token}")
        assert refused.value.response.status_code == 403


async def test_a_caller_never_sees_a_platform_session_even_by_id(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_API_KEYS=f"carol:{KEY}")
    await place_call(gateway)
    carol = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        [call_id] = platform_ids((await http.get("/sessions", headers=ADMIN)).json())
        assert (await http.get("/sessions", headers=carol)).json()["sessions"] == []
        assert (await http.get(f"/sessions/{call_id}", headers=carol)).status_code == 404
        assert (await http.delete(f"/sessions/{call_id}", headers=carol)).status_code == 404
        assert (await http.get(f"/sessions/{call_id}", headers=ADMIN)).status_code == 200


async def test_admin_keys_work_only_on_the_session_api(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0)
    with pytest.raises(InvalidStatus) as refused:
        await Client.connect(f"{gateway.ws_url}/ws", additional_headers=ADMIN)
    assert refused.value.response.status_code == 403
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        made = await http.post("/sessions", headers=ADMIN)
    assert (made.status_code, made.json()["error"]["code"]) == (403, "admin_key_not_allowed")


def test_an_admin_key_cannot_also_be_an_api_key() -> None:
    with pytest.raises(SettingsError, match="must not also be an API key"):
        load_settings(_env_file=None, GATEWAY_API_KEYS=f"carol:{KEY}", GATEWAY_ADMIN_KEYS=KEY)


def test_session_kinds_include_sessions_stored_before_namespaces() -> None:
    assert session_kind("s_abc", "alice") == "client"
    assert session_kind("s_abc", "addr:127.0.0.1") == "client"
    assert session_kind("s_abc", None) == "client"
    assert session_kind("retell_abc", "platform:retell") == "retell"
    assert session_kind("twilio_abc", "twilio") == "twilio"  # owner string of old rows
    assert session_kind("layercode_abc", None) == "layercode"
