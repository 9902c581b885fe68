"""What the bounded context buys: long sessions and huge requests, with and without the cut.

Runs the real gateway on the real google-genai SDK against the fake Gemini server
(tests/support/fake_gemini.py), twice: with the default history budget
(GATEWAY_MAX_HISTORY_TOKENS / GATEWAY_MAX_HISTORY_MESSAGES) and with no budget
(both 0, the behaviour before it existed). Prints, for each:

- a session of N turns: first-chunk time (gateway clock) over the first and the
  last ten turns, the size of the last request, and the worst ping of another
  session while the last turns ran;
- one ``POST /v1/chat/completions`` with M short messages: its time, and the worst
  ping of another session while it was served.

    .venv/bin/python bench/context_bench.py [--turns 300] [--messages 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from gateway.app import create_app, uvicorn_options
from gateway.settings import Settings
from tests.support.fake_gemini import FakeGemini
from tests.support.servers import running

QUESTION = "Tell me more about the history of the city, the river, the bridges and the old town. "


async def pinger(ws: ClientConnection, stop: asyncio.Event) -> float:
    """Ping until ``stop``; the worst round trip in ms."""
    worst, n = 0.0, 0
    while not stop.is_set():
        n += 1
        started = time.perf_counter()
        await ws.send(orjson.dumps({"type": "ping", "id": n}).decode())
        while orjson.loads(await ws.recv())["type"] != "pong":
            pass
        worst = max(worst, time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return worst * 1000


async def long_session(ws_url: str, turns: int, fake: FakeGemini) -> dict[str, float]:
    first_chunk: list[int] = []
    async with connect(ws_url, max_size=None) as ws, connect(ws_url) as other:
        await ws.recv()
        await other.recv()
        stop = asyncio.Event()
        ping: asyncio.Task[float] | None = None
        for i in range(turns):
            if i == turns - 10:
                ping = asyncio.create_task(pinger(other, stop))
            await ws.send(f"{i}: {QUESTION * 2}")
            while (event := orjson.loads(await ws.recv()))["type"] != "response.end":
                pass
            first_chunk.append(event["latency"]["first_chunk_ms"])
        stop.set()
        worst = await ping if ping is not None else 0.0
    last = fake.requests[-1]
    return {
        "first_chunk_ms_first10": statistics.median(first_chunk[:10]),
        "first_chunk_ms_middle10": statistics.median(first_chunk[turns // 2 - 10 : turns // 2]),
        "first_chunk_ms_last10": statistics.median(first_chunk[-10:]),
        "last_request_kb": len(json.dumps(last.body)) / 1024,
        "last_request_contents": len(last.contents),
        "worst_ping_ms_last10": worst,
    }


async def huge_request(http_url: str, ws_url: str, messages: int) -> dict[str, float]:
    chat = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"}
        for i in range(messages - 1)
    ] + [{"role": "user", "content": "and the last question?"}]
    async with connect(ws_url) as other, httpx.AsyncClient(base_url=http_url, timeout=120) as http:
        await other.recv()
        stop = asyncio.Event()
        ping = asyncio.create_task(pinger(other, stop))
        started = time.perf_counter()
        response = await http.post("/v1/chat/completions", json={"messages": chat})
        took = (time.perf_counter() - started) * 1000
        stop.set()
        worst = await ping
    assert response.status_code == 200, response.text
    return {"request_ms": took, "worst_ping_ms": worst}


async def run(label: str, env: dict[str, Any], turns: int, messages: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeGemini() as fake:
        settings = Settings(
            _env_file=None,
            GEMINI_API_KEY="bench",
            GEMINI_BASE_URL=fake.url,
            GATEWAY_STORE=f"sqlite:///{tmp}/bench.db",
            GATEWAY_RATE_PER_S=1000,
            GATEWAY_RATE_BURST=1000,
            **env,
        )
        with running(create_app(settings), **uvicorn_options(settings)) as server:
            session = await long_session(f"{server.ws_url}/ws", turns, fake)
            huge = await huge_request(server.http_url, f"{server.ws_url}/ws", messages)
    print(f"{label}:")
    print(
        f"  {turns}-turn session: first chunk {session['first_chunk_ms_first10']:.0f} ms "
        f"(turns 1-10), {session['first_chunk_ms_middle10']:.0f} ms (10 before turn {turns // 2}), "
        f"{session['first_chunk_ms_last10']:.0f} ms (last 10); last request "
        f"{session['last_request_kb']:.0f} KB, {session['last_request_contents']:.0f} contents; "
        f"another session's worst ping {session['worst_ping_ms_last10']:.0f} ms"
    )
    print(
        f"  {messages}-message /v1/chat/completions: {huge['request_ms']:.0f} ms; "
        f"another session's worst ping {huge['worst_ping_ms']:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--messages", type=int, default=8000)
    args = parser.parse_args()
    unbounded = {"GATEWAY_MAX_HISTORY_TOKENS": 0, "GATEWAY_MAX_HISTORY_MESSAGES": 0}
    asyncio.run(run("no history budget (baseline)", unbounded, args.turns, args.messages))
    asyncio.run(run("default history budget", {}, args.turns, args.messages))


if __name__ == "__main__":
    main()
