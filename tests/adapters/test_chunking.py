"""Each platform route cuts replies as its platform wants: by default word by word where
the platform streams text into its own TTS chunking, whole sentences when configured."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from tests.adapters.http_helpers import http_client, read_sse
from tests.adapters.ws_helpers import GEMINI_ENV
from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

REPLY = "Sure, I can help with that, and here is what I found. Bye now."
FIRST_SENTENCE = "Sure, I can help with that, and here is what I found."

Route = Callable[[RunningServer], Awaitable[list[str]]]


async def twilio(gateway: RunningServer) -> list[str]:
    async with await Client.connect(f"{gateway.ws_url}/twilio") as call:
        await call.send({"type": "setup", "callSid": "CA1", "sessionId": "VX1"})
        await call.send({"type": "prompt", "voicePrompt": "Hi", "lang": "en-US", "last": True})
        frames = await call.recv_until(lambda f: f["type"] == "text" and f["last"])
    return [f["token"].strip() for f in frames if f["token"]]


async def retell(gateway: RunningServer) -> list[str]:
    async with await Client.connect(f"{gateway.ws_url}/retell/call-1") as call:
        ask = {
            "interaction_type": "response_required",
            "response_id": 1,
            "transcript": [{"role": "user", "content": "Hi"}],
        }
        await call.send(orjson.dumps(ask).decode())
        frames = await call.recv_until(
            lambda f: f.get("response_id") == 1 and f.get("content_complete") is True
        )
    return [f["content"].strip() for f in frames if f.get("response_id") == 1 and f["content"]]


async def openai(gateway: RunningServer) -> list[str]:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    async with http_client(gateway.http_url) as client:
        _, events = await read_sse(client, "/v1/chat/completions", json=body)
    texts = [e["choices"][0]["delta"].get("content") for e in events if isinstance(e, dict)]
    return [t.strip() for t in texts if t]


async def layercode(gateway: RunningServer) -> list[str]:
    hook = {"type": "message", "session_id": "s", "conversation_id": "c", "turn_id": "t1"}
    async with http_client(gateway.http_url) as client:
        _, events = await read_sse(client, "/layercode/agent", json={**hook, "text": "Hi"})
    return [e["content"] for e in events if e["type"] == "response.tts"]


ROUTES: list[tuple[str, Route]] = [
    ("TWILIO_CHUNKING", twilio),
    ("RETELL_CHUNKING", retell),
    ("OPENAI_COMPAT_CHUNKING", openai),
    ("LAYERCODE_CHUNKING", layercode),
]


def start(start_gateway: GatewayFactory, fake_gemini: FakeGemini, **env: Any) -> RunningServer:
    return start_gateway(**GEMINI_ENV, GEMINI_BASE_URL=fake_gemini.url, **env)


@pytest.mark.parametrize(("setting", "route"), ROUTES, ids=[r[0] for r in ROUTES])
async def test_platform_routes_stream_words_by_default(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini, setting: str, route: Route
) -> None:
    gateway = start(start_gateway, fake_gemini)
    fake_gemini.reply(REPLY, chunk_size=6)
    chunks = await route(gateway)
    assert chunks[0] == "Sure,"  # out with the second piece, not at the sentence's end
    assert len(chunks) > 4
    assert " ".join(chunks) == REPLY  # no word split, lost or repeated


@pytest.mark.parametrize(("setting", "route"), ROUTES, ids=[r[0] for r in ROUTES])
async def test_a_route_can_be_set_to_whole_sentences(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini, setting: str, route: Route
) -> None:
    gateway = start(start_gateway, fake_gemini, **{setting: "sentence"})
    fake_gemini.reply(REPLY, chunk_size=6)
    assert await route(gateway) == [FIRST_SENTENCE, "Bye now."]


async def test_clause_mode_cuts_after_commas(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start(start_gateway, fake_gemini, TWILIO_CHUNKING="clause")
    fake_gemini.reply(REPLY, chunk_size=6)
    assert await twilio(gateway) == [
        "Sure,",
        "I can help with that,",
        "and here is what I found.",
        "Bye now.",
    ]


async def test_the_native_route_keeps_whole_sentences_unless_configured(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    for env, first in (({}, FIRST_SENTENCE), ({"GATEWAY_CHUNKING": "clause"}, "Sure,")):
        gateway = start(start_gateway, fake_gemini, **env)
        fake_gemini.reply(REPLY, chunk_size=6)
        async with await Client.connect(f"{gateway.ws_url}/ws") as ws:
            await ws.recv()
            await ws.send({"type": "user.message", "text": "Hi"})
            events = await ws.recv_until(lambda e: e["type"] == "response.end")
        assert [e["text"] for e in events if e["type"] == "response.tts"][0] == first
