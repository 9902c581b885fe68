"""What the security layers cost: requests and upgrades through the gateway's protocol
classes and host/origin gate, beside stock uvicorn protocols in the same run.

Baseline: the same app without its host/origin gate, served with uvicorn's own
``httptools`` and ``websockets-sansio`` protocols (no header timeout, size
limit, socket cap or byte budget). Prints requests per second for
``GET /health`` (no host check) and ``GET /sessions`` (host check, API), and
WebSocket connects per second on
``/ws`` (host and origin check, a session stored each time), each over
sequential keep-alive / fresh connections; best of three interleaved rounds.

    .venv/bin/python bench/security_bench.py [--requests 2000] [--upgrades 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from gateway.app import create_app, uvicorn_options
from gateway.settings import Settings
from tests.support.servers import running


async def requests_per_s(base: str, path: str, n: int) -> float:
    async with httpx.AsyncClient(base_url=base) as http:
        await http.get(path)
        start = time.perf_counter()
        for _ in range(n):
            (await http.get(path)).raise_for_status()
        return n / (time.perf_counter() - start)


async def upgrades_per_s(url: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        async with connect(url) as ws:
            await ws.recv()
    return n / (time.perf_counter() - start)


def measure(
    options: dict[str, Any], settings: Settings, args: argparse.Namespace, *, gate: bool
) -> list[float]:
    app = create_app(settings)
    if not gate:
        app.user_middleware = []  # the baseline: no host/origin gate
    with running(app, **options) as server:

        async def run() -> list[float]:
            return [
                await requests_per_s(server.http_url, "/health", args.requests),
                await requests_per_s(server.http_url, "/sessions", args.requests),
                await upgrades_per_s(f"{server.ws_url}/ws", args.upgrades),
            ]

        return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--upgrades", type=int, default=300)
    args = parser.parse_args()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        GATEWAY_STORE="memory://",
        GATEWAY_MAX_SESSIONS_PER_PRINCIPAL=1_000_000,
        GATEWAY_MAX_STORED_SESSIONS=1_000_000,
    )
    gateway = uvicorn_options(settings)
    stock = {**gateway, "http": "httptools", "ws": "websockets-sansio"}
    rounds = [
        (measure(stock, settings, args, gate=False), measure(gateway, settings, args, gate=True))
        for _ in range(3)
    ]  # interleaved; the best of each, so a busy moment of the machine counts less
    base = [max(r[0][i] for r in rounds) for i in range(3)]
    ours = [max(r[1][i] for r in rounds) for i in range(3)]
    print(f"{'':28} {'stock uvicorn':>14} {'gateway':>10} {'ratio':>6}")
    for name, b, o in zip(
        ("GET /health  req/s", "GET /sessions req/s", "WS /ws connects/s"), base, ours, strict=True
    ):
        print(f"{name:28} {b:14.0f} {o:10.0f} {o / b:6.2f}")


if __name__ == "__main__":
    main()
