"""Helpers for the platform simulators (Twilio, Retell) that dial the real gateway."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx

from tests.adapters.http_helpers import SENTENCES
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import ADMIN, GatewayFactory
from tests.support.servers import RunningServer

GEMINI_ENV: dict[str, Any] = {
    "GEMINI_API_KEY": "test-key-not-secret",
    "GEMINI_MODEL": "gemini-test",
    "GATEWAY_INSTRUCTIONS": "You are a helpful voice assistant.",
}


def gemini_env(fake_gemini: FakeGemini, **extra: Any) -> dict[str, Any]:
    """Settings for a gateway on the fake Gemini server, cutting whole sentences on every
    route, plus ``extra``."""
    return {**GEMINI_ENV, **SENTENCES, "GEMINI_BASE_URL": fake_gemini.url, **extra}


def start_on_gemini(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini, **extra: Any
) -> RunningServer:
    return start_gateway(**gemini_env(fake_gemini, **extra))


def twilio_signature(auth_token: str, url: str) -> str:
    """What Twilio puts in ``X-Twilio-Signature`` for a request without a body
    (written out here from Twilio's documented algorithm, not taken from the gateway)."""
    mac = hmac.new(auth_token.encode("utf-8"), url.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


async def keyed_session_ids(gateway: RunningServer, kind: str) -> list[str]:
    """Ids of the stored sessions a platform adapter opened (``<kind>_…``)."""
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        page = (await http.get("/sessions", params={"limit": 100}, headers=ADMIN)).json()
    return [s["session_id"] for s in page["sessions"] if s["session_id"].startswith(f"{kind}_")]


async def delete_session(gateway: RunningServer, session_id: str) -> int:
    """``DELETE /sessions/{id}``; the HTTP status."""
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        return (await http.delete(f"/sessions/{session_id}", headers=ADMIN)).status_code


def as_turns(transcript: list[dict[str, str]]) -> list[tuple[str, list[str]]]:
    """A Retell transcript as the Gemini ``contents`` the fake records."""
    role = {"agent": "model", "user": "user"}
    return [(role[u["role"]], [u["content"]]) for u in transcript]
