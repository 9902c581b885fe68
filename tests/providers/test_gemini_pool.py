"""The Gemini provider keeps its HTTP connections for the next turns, however many run."""

from __future__ import annotations

import asyncio

from gateway.core.history import GenerationRequest, Message
from gateway.providers.gemini import GeminiProvider
from tests.support.fake_gemini import FakeGemini


async def test_concurrent_turns_reuse_their_connections(fake_gemini: FakeGemini) -> None:
    provider = GeminiProvider(api_key="test-key-not-secret", model="m", base_url=fake_gemini.url)

    async def turn(i: int) -> None:
        request = GenerationRequest("s", f"t{i}", None, (Message("user", f"hi {i}"),))
        async for _ in provider.stream(request):
            pass

    try:
        for _ in range(40):
            fake_gemini.reply("Hello there.", chunk_size=4, delay_s=0.05)
        await asyncio.gather(*(turn(i) for i in range(40)))  # 40 at once: 40 connections
        first = {r.client for r in fake_gemini.wait_for_requests(40)}
        for _ in range(40):
            fake_gemini.reply("Hello there.", chunk_size=4, delay_s=0.05)
        await asyncio.gather(*(turn(i) for i in range(40)))
        second = {r.client for r in fake_gemini.wait_for_requests(80)[40:]}
    finally:
        await provider.aclose()
    assert len(first) == 40
    assert second <= first  # no turn of the second wave had to connect again
