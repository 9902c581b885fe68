"""Helpers for the HTTP platform simulators (Layercode, OpenAI-compatible clients)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

#: Every read waits at most this long, so a hung stream fails the test instead.
TIMEOUT_S = 10.0

#: System instructions of the test gateways.
INSTRUCTIONS = "You are a helpful voice assistant."

#: Whole-sentence chunks on every platform route, so that tests can assert chunk texts.
SENTENCES: dict[str, str] = {
    name: "sentence"
    for name in ("TWILIO_CHUNKING", "RETELL_CHUNKING", "LAYERCODE_CHUNKING")
    + ("OPENAI_COMPAT_CHUNKING",)
}


def start_on_gemini(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini, **env: Any
) -> RunningServer:
    """A gateway on the real SDK against the fake Gemini, without provider retries
    (so a scripted failure is a failure), cutting whole sentences on every route unless
    ``env`` says otherwise (tests/adapters/test_chunking.py covers the routes' defaults)."""
    return start_gateway(
        GEMINI_API_KEY="test-key-not-secret",
        GEMINI_BASE_URL=fake_gemini.url,
        GEMINI_MODEL="gemini-test",
        GATEWAY_INSTRUCTIONS=INSTRUCTIONS,
        GATEWAY_PROVIDER_RETRIES=0,
        **{**SENTENCES, **env},
    )


def http_client(base_url: str, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT_S, **kwargs)


def layercode_signature(secret: str, body: bytes, timestamp: int) -> str:
    """``layercode-signature`` as Layercode documents it (written out here, not taken
    from the gateway): ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``."""
    digest = hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


class SseReader:
    """Reads ``data:`` events of a streamed response one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines: AsyncIterator[str] = response.aiter_lines()

    async def next(self) -> Any:
        """The next event (a JSON value, or the string ``[DONE]``); ``None`` at the end."""
        while True:
            try:
                line = await anext(self._lines)
            except StopAsyncIteration:
                return None
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                return data if data == "[DONE]" else orjson.loads(data)
            assert line == "" or line.startswith(":"), f"not an SSE line: {line!r}"

    async def rest(self) -> list[Any]:
        """Every event up to the end of the stream."""
        events = []
        while (event := await self.next()) is not None:
            events.append(event)
        return events


async def read_sse(client: httpx.AsyncClient, path: str, **kwargs: Any) -> tuple[int, list[Any]]:
    """POST and read the whole answer: ``(status, events)``; a JSON answer is one event."""
    async with client.stream("POST", path, **kwargs) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status_code, await SseReader(response).rest()
        return response.status_code, [orjson.loads(await response.aread())]
