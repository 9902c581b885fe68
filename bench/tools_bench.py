"""What a function call costs a turn: plain turns beside turns with one client
call on /ws and turns with one server (webhook) call, through a real server.

The provider is instant and in-process: it calls ``get_weather`` when the last
message is the user's and answers with a sentence once the result is in, so every
millisecond measured is the gateway's (and, for the webhook, a loopback HTTP POST
to a local server). Memory store.

    .venv/bin/python bench/tools_bench.py [--turns 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from gateway.app import create_app, uvicorn_options
from gateway.core.history import FunctionCall, GenerationRequest, StreamItem
from gateway.settings import Settings
from tests.support.servers import running

SENTENCE = "It is twenty-one degrees and sunny in Paris today, a fine day for a walk."
TOOL = {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


class CallingProvider:
    """Calls ``get_weather`` once per turn when tools are offered, then speaks."""

    name = "bench"
    model = "instant"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        last = request.messages[-1] if request.messages else None
        if request.tools and last is not None and last.role == "user":
            yield FunctionCall("", "get_weather", '{"city": "Paris"}')
            return
        yield SENTENCE

    async def aclose(self) -> None:
        return None


async def weather(request: Request) -> JSONResponse:
    return JSONResponse({"temp_c": 21, "sky": "sunny"})


async def turns(url: str, n: int, *, client_tool: bool) -> list[float]:
    took: list[float] = []
    async with connect(url, max_size=None) as ws:
        await ws.recv()
        if client_tool:
            await ws.send(orjson.dumps({"type": "session.update", "tools": [TOOL]}).decode())
            await ws.recv()
        for i in range(n):
            start = time.perf_counter()
            await ws.send(f"Weather question {i}?")
            while True:
                event = orjson.loads(await ws.recv())
                if event["type"] == "response.function_call":
                    result = {"type": "function.result", "call_id": event["call_id"], "output": {}}
                    await ws.send(orjson.dumps(result).decode())
                elif event["type"] == "response.end":
                    assert event["status"] == "completed", event
                    break
            took.append((time.perf_counter() - start) * 1000)
    return took


def report(label: str, took: list[float]) -> None:
    p99 = statistics.quantiles(took, n=100)[98]
    print(f"{label:34} {statistics.mean(took):>8.2f} {statistics.median(took):>8.2f} {p99:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    base = {"_env_file": None, "GATEWAY_STORE": "memory://", "GATEWAY_RATE_PER_S": 10000}
    print(f"{args.turns} turns each; ms per turn on the client's clock")
    print(f"{'':34} {'mean':>8} {'median':>8} {'p99':>8}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        running(Starlette(routes=[Route("/weather", weather, methods=["POST"])])) as hook,
    ):
        tools_file = Path(tmp) / "tools.yaml"
        tools_file.write_text(
            "allow_private_addresses: true\ntools:\n  - name: get_weather\n"
            f"    url: {hook.http_url}/weather\n",
            encoding="utf-8",
        )
        plain = Settings(**base)  # type: ignore[arg-type]
        served = Settings(**base, GATEWAY_TOOLS_FILE=str(tools_file))  # type: ignore[arg-type]
        with running(create_app(plain, provider=CallingProvider()), **uvicorn_options(plain)) as gw:
            url = f"{gw.ws_url}/ws"
            asyncio.run(turns(url, 5, client_tool=True))  # warm up
            report("plain turn (baseline)", asyncio.run(turns(url, args.turns, client_tool=False)))
            report(
                "one client call (/ws round trip)",
                asyncio.run(turns(url, args.turns, client_tool=True)),
            )
        with running(
            create_app(served, provider=CallingProvider()), **uvicorn_options(served)
        ) as gw:
            url = f"{gw.ws_url}/ws"
            asyncio.run(turns(url, 5, client_tool=False))
            report(
                "one server call (webhook POST)",
                asyncio.run(turns(url, args.turns, client_tool=False)),
            )


if __name__ == "__main__":
    main()
