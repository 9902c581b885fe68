"""What the gateway itself costs: turns through a real server with an instant provider.

The offline provider streams with no delay, so every millisecond measured is the
gateway's: framing, the chunker, the store-then-send pipeline, the WebSocket. Runs
N concurrent sessions of M turns each against the memory store and SQLite, and
prints turn time (client clock), first chunk time (gateway clock) and events per
second.

    .venv/bin/python bench/gateway_bench.py [--sessions 1 20] [--turns 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from gateway.app import create_app, uvicorn_options
from gateway.settings import Settings
from tests.support.servers import running


async def session(url: str, turns: int) -> tuple[list[float], list[int], int]:
    took: list[float] = []
    first_chunk: list[int] = []
    events = 0
    async with connect(url, max_size=None) as ws:
        await ws.recv()
        for i in range(turns):
            start = time.perf_counter()
            await ws.send(f"Benchmark question number {i}, please answer")
            while True:
                event = orjson.loads(await ws.recv())
                events += 1
                if event["type"] == "response.end":
                    break
            took.append((time.perf_counter() - start) * 1000)
            first_chunk.append(event["latency"]["first_chunk_ms"])
    return took, first_chunk, events


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


async def measure(url: str, sessions: int, turns: int) -> tuple[list[float], list[int], int, float]:
    start = time.perf_counter()
    results = await asyncio.gather(*(session(url, turns) for _ in range(sessions)))
    elapsed = time.perf_counter() - start
    took = [t for r in results for t in r[0]]
    first = [f for r in results for f in r[1]]
    return took, first, sum(r[2] for r in results), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    print(f"{args.turns} turns per session; offline provider with no delay (~280 chars, 4 chunks)")
    print(f"{'store':8} {'sessions':>8} {'turn ms':>8} {'p99':>7} {'1st chunk':>9} {'events/s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for store in ("memory://", f"sqlite:///{Path(tmp) / 'bench.db'}"):
            settings = Settings(
                _env_file=None,
                GATEWAY_STORE=store,
                GATEWAY_OFFLINE_DELAY_MS=0,
                GATEWAY_RATE_PER_S=1000,
                GATEWAY_RATE_BURST=1000,
            )
            with running(create_app(settings), **uvicorn_options(settings)) as server:
                url = f"{server.ws_url}/ws"
                asyncio.run(measure(url, 1, 3))  # warm up
                for sessions in args.sessions:
                    took, first, events, elapsed = asyncio.run(measure(url, sessions, args.turns))
                    print(
                        f"{store.split(':')[0]:8} {sessions:>8} {statistics.mean(took):>8.2f} "
                        f"{p99(took):>7.2f} {statistics.mean(first):>9.2f} "
                        f"{events / elapsed:>9.0f}"
                    )


if __name__ == "__main__":
    main()
