"""What the distributed mode adds: the cross-instance relay hop, and turns/s over instances.

Run: ``.venv/bin/python bench/cluster_bench.py [--events 2000] [--sessions 8] [--turns 10]``.
Starts its own redis-server (AOF everysec) on a free port.

1. **Relay hop**: a writer commits one event every 5 ms (as an owner does); a
   follower in another process (as a relaying edge does, ``RedisCluster.follow``)
   notes when each arrives. Printed: commit round trip (the baseline, in the same
   run) and commit-to-follower latency, p50 and p99, on one clock (CLOCK_MONOTONIC).
2. **Turns/s**: ``--sessions`` clients each play ``--turns`` turns with the instant
   offline provider, against 1 gateway process and then against 2 (clients spread
   over them), both on this Redis; and 1 process on SQLite as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.stores.base import SessionMeta, StoredEvent
from gateway.stores.redis import RedisStore
from gateway.stores.redis_cluster import RedisCluster
from tests.support.process import free_port
from tests.support.redis_server import RedisServer

PERIOD_S = 0.005


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


async def _follow(url: str, events: int) -> list[float]:
    store = RedisStore(url)
    await store.open()
    cluster = RedisCluster(store, instance_id="follower", block_s=1.0)
    got: list[float] = []
    try:
        async for batch in cluster.follow("relay", 0):
            now = time.monotonic()
            got += [(now - json.loads(e.data)["t"]) * 1000 for e in batch]
            if len(got) >= events:
                return got
    finally:
        await store.aclose()
    return got


def _follower(url: str, events: int, out: multiprocessing.Queue[list[float]]) -> None:
    out.put(asyncio.run(_follow(url, events)))


async def relay_hop(url: str, events: int) -> None:
    store = RedisStore(url)
    await store.open()
    await store.client.flushall()
    now = time.time()
    await store.create(SessionMeta("relay", "h", None, now, now), b"")
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[float]] = context.Queue()
    child = context.Process(target=_follower, args=(url, events, out))
    child.start()
    await asyncio.sleep(1.5)  # the follower is up and blocked in XREAD
    commit_ms: list[float] = []
    for seq in range(1, events + 1):
        data = json.dumps({"type": "response.tts", "seq": seq, "t": time.monotonic()})
        started = time.perf_counter()
        await store.commit("relay", events=[StoredEvent(seq, "response.tts", "t1", data)])
        commit_ms.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(PERIOD_S)
    hop = await asyncio.get_running_loop().run_in_executor(None, out.get)
    child.join()
    await store.aclose()
    print(f"relay hop, {events} events, one every {PERIOD_S * 1000:g} ms:")
    for label, values in (("commit round trip (baseline)", commit_ms), ("commit to follower", hop)):
        print(f"  {label:30} p50 {_pct(values, 50):6.2f} ms  p99 {_pct(values, 99):6.2f} ms")


async def _client(url: str, turns: int) -> int:
    async with connect(url, max_size=None) as ws:
        await ws.recv()
        for i in range(turns):
            await ws.send(f"Benchmark question number {i}, please answer")
            while orjson.loads(await ws.recv())["type"] != "response.end":
                pass
    return turns


async def _turns_per_s(ports: list[int], sessions: int, turns: int) -> float:
    urls = [f"ws://127.0.0.1:{ports[i % len(ports)]}/ws" for i in range(sessions)]
    started = time.perf_counter()
    done = await asyncio.gather(*(_client(u, turns) for u in urls))
    return sum(done) / (time.perf_counter() - started)


def _gateways(n: int, store_url: str) -> tuple[list[int], list[object]]:
    import subprocess

    from tests.support.process import clean_env

    ports, procs = [], []
    for _ in range(n):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--port", str(port), "--log-level", "warning"],
            env=clean_env(GATEWAY_STORE=store_url, GATEWAY_OFFLINE_DELAY_MS="0"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ports.append(port)
        procs.append(proc)
    return ports, procs


async def _wait_up(ports: list[int]) -> None:
    for port in ports:
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)


def throughput(redis_url: str, tmp: Path, sessions: int, turns: int) -> None:
    import subprocess

    print(f"turns/s, {sessions} sessions x {turns} turns, instant offline provider:")
    for label, n, url in (
        ("1 process, SQLite (baseline)", 1, f"sqlite:///{tmp / 'bench.db'}"),
        ("1 process, Redis", 1, redis_url),
        ("2 processes, Redis", 2, redis_url),
    ):
        ports, procs = _gateways(n, url)
        try:
            asyncio.run(_wait_up(ports))
            rate = asyncio.run(_turns_per_s(ports, sessions, turns))
        finally:
            for proc in procs:
                assert isinstance(proc, subprocess.Popen)
                proc.terminate()
                proc.wait(timeout=60)
        print(f"  {label:30} {rate:7.0f} turns/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            asyncio.run(relay_hop(server.url, args.events))
            throughput(server.url, Path(tmp), args.sessions, args.turns)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
