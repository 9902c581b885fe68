"""Where an idle session's memory goes: RSS and tracemalloc deltas over many idle sessions.

The gateway runs in this process (under uvicorn, in a thread, with tracemalloc on); a
client in another process opens ``--sessions`` native sessions and holds them open. The
growth of RSS and of traced Python memory, divided by the sessions, is printed per
variant (client offering permessage-deflate or not, gateway accepting it or not), with
the traced memory split by where it was allocated. Memory that RSS sees and tracemalloc
does not is C memory: zlib's compression contexts, the event loop's buffers.

Reference servers show what the stack costs before the gateway does anything, each
accepting, sending one frame and reading until the client goes: a bare ASGI app and a
minimal starlette app with one ``WebSocketRoute``, under the same uvicorn options
(``gateway/transport.py``), and, with no ASGI at all, the ``websockets`` library's own
asyncio server (``compression=None``).

    .venv/bin/python bench/idle_memory.py [--sessions 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import defaultdict
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.asyncio.server import Server, ServerConnection, serve

from bench.procs import ROOT
from gateway.app import create_app, uvicorn_options
from gateway.settings import Settings
from tests.support.servers import running

_CLIENT = """
import asyncio, sys
from websockets.asyncio.client import connect

async def main(url, n, compression):
    opening = asyncio.Semaphore(64)
    async def one():
        async with opening:
            ws = await connect(url, compression=compression, open_timeout=60)
            await ws.recv()
            return ws
    conns = await asyncio.gather(*(one() for _ in range(n)))
    sys.stdout.write("OPEN\\n"); sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.gather(*(c.close() for c in conns))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), None if sys.argv[3] == "off" else "deflate"))
"""

#: Where allocations are charged, by the first matching part of their file's path.
_AREAS = (
    ("gateway/stores", "gateway: store"),
    ("gateway/core/replay", "gateway: replay log"),
    ("gateway/core", "gateway: session core"),
    ("gateway/", "gateway: shell"),
    ("websockets/", "websockets"),
    ("uvicorn/", "uvicorn"),
    ("starlette/", "starlette"),
    ("asyncio/", "asyncio (tasks, futures, queues)"),
    ("uvloop", "uvloop"),
)


def _area(filename: str) -> str:
    for part, name in _AREAS:
        if part in filename:
            return name
    return "other"


def _relative(filename: str) -> str:
    return filename[filename.rfind("/gateway/") + 1 :]


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


_READY = '{"type":"session.ready"}'


async def _bare(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app: accept, one frame, read until the client goes."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": _READY})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def _reader(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(_READY)
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _echo_ready(connection: ServerConnection) -> None:
    await connection.send(_READY)
    async for _ in connection:
        pass


class _WebsocketsServer:
    """The ``websockets`` library's own server, in a thread with its own loop."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Server | None = None
        self.ws_url = ""

    def __enter__(self) -> _WebsocketsServer:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self._server = server
        port = next(iter(server.sockets)).getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{port}"
        return self

    @staticmethod
    async def _start() -> Server:
        return await serve(_echo_ready, "127.0.0.1", 0, compression=None)

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            asyncio.run_coroutine_threadsafe(self._server.wait_closed(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def _app(kind: str, settings: Settings) -> ASGIApp:
    if kind == "bare ASGI":
        return _bare
    if kind == "minimal starlette":
        return Starlette(routes=[WebSocketRoute("/ws", _reader)])
    return create_app(settings)


@dataclass
class Variant:
    name: str
    server_deflate: bool | None  # None: as uvicorn_options(settings) says
    client_deflate: bool
    app: str = "gateway"  # or one of the reference apps of _app
    rss_kb: float = 0.0
    traced_kb: float = 0.0
    areas: dict[str, float] = field(default_factory=dict)
    lines: list[tuple[str, float]] = field(default_factory=list)
    ours: list[tuple[str, float]] = field(default_factory=list)


def measure(variant: Variant, sessions: int, tmp: Path, *, traced: bool) -> None:
    """RSS growth per session (``traced=False``: tracemalloc's own bookkeeping would
    inflate it), or traced growth by area and site (``traced=True``)."""
    settings = Settings(
        _env_file=None,
        GATEWAY_STORE=f"sqlite:///{tmp / (variant.name.replace(' ', '_') + '.db')}",
        GATEWAY_MAX_CONNECTIONS=100000,
        GATEWAY_MAX_CONNECTIONS_PER_PRINCIPAL=100000,
        GATEWAY_MAX_SESSIONS_PER_PRINCIPAL=1000000,
        GATEWAY_LOG_LEVEL="warning",
    )
    options = uvicorn_options(settings)
    if variant.server_deflate is not None:
        options["ws_per_message_deflate"] = variant.server_deflate
    serving: AbstractContextManager[Any] = (
        _WebsocketsServer()
        if variant.app == "websockets"
        else running(_app(variant.app, settings), **options)
    )
    with serving as server:
        url = f"{server.ws_url}/ws"
        deflate = "on" if variant.client_deflate else "off"
        warm = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, url, "20", deflate],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert warm.stdout is not None
        assert warm.stdin is not None
        warm.stdout.readline()
        warm.stdin.write("\n")
        warm.stdin.flush()
        warm.wait()
        time.sleep(0.5)
        gc.collect()
        if traced:
            tracemalloc.start(1)
        before_rss = _rss_kb()
        before = tracemalloc.take_snapshot() if traced else None
        client = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, url, str(sessions), deflate],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert client.stdout is not None
        assert client.stdin is not None
        if client.stdout.readline().strip() != "OPEN":
            raise RuntimeError("the client could not open its sessions")
        time.sleep(1.0)
        gc.collect()
        after_rss = _rss_kb()
        after = tracemalloc.take_snapshot() if traced else None
        tracemalloc.stop()
        client.stdin.write("\n")
        client.stdin.flush()
        client.wait()
    if before is None or after is None:
        variant.rss_kb = (after_rss - before_rss) / sessions
        return
    stats = after.compare_to(before, "lineno")
    variant.traced_kb = sum(s.size_diff for s in stats) / 1024 / sessions
    areas: dict[str, float] = defaultdict(float)
    for stat in stats:
        areas[_area(stat.traceback[0].filename)] += stat.size_diff / 1024 / sessions
    variant.areas = dict(sorted(areas.items(), key=lambda kv: -kv[1]))
    variant.lines = [
        (f"{Path(s.traceback[0].filename).name}:{s.traceback[0].lineno}", s.size_diff / sessions)
        for s in sorted(stats, key=lambda s: -s.size_diff)[:20]
    ]
    variant.ours = [
        (site, size)
        for site, size in (
            (
                f"{_relative(s.traceback[0].filename)}:{s.traceback[0].lineno}",
                s.size_diff / sessions,
            )
            for s in sorted(stats, key=lambda s: -s.size_diff)
            if "/gateway/" in s.traceback[0].filename
        )
        if size >= 16
    ]


VARIANTS = (
    Variant("as configured (GATEWAY_WS_DEFLATE)", None, True),
    Variant("permessage-deflate accepted", True, True),
    Variant("permessage-deflate refused", False, True),
    Variant("reference: bare ASGI app", None, True, app="bare ASGI"),
    Variant("reference: minimal starlette app", None, True, app="minimal starlette"),
    Variant("reference: websockets' own server, no ASGI", None, True, app="websockets"),
)


def _one(index: int, sessions: int, traced: bool) -> None:
    """Measure one variant in this (fresh) process; print it as JSON."""
    variant = VARIANTS[index]
    with tempfile.TemporaryDirectory() as tmp:
        measure(variant, sessions, Path(tmp), traced=traced)
    sys.stdout.write(orjson.dumps(asdict(variant)).decode() + "\n")


def _in_child(index: int, sessions: int, traced: bool) -> Variant:
    mode = "traced" if traced else "rss"
    run = subprocess.run(
        [sys.executable, __file__, f"--sessions={sessions}", f"--one={index}", f"--mode={mode}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    data = orjson.loads(run.stdout.strip().splitlines()[-1])
    data["lines"] = [tuple(x) for x in data["lines"]]
    data["ours"] = [tuple(x) for x in data["ours"]]
    return Variant(**data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["rss", "traced"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        _one(args.one, args.sessions, args.mode == "traced")
        return
    # Each figure comes from a fresh process: memory freed by an earlier run would be
    # reused and hide growth, and tracemalloc's bookkeeping would inflate RSS.
    rss = [_in_child(i, args.sessions, False) for i in range(len(VARIANTS))]
    traced = [_in_child(i, args.sessions, True) for i in range(len(VARIANTS))]
    out = sys.stdout.write
    out(f"### Idle session memory ({args.sessions} idle native sessions), KiB per session\n\n")
    out("| variant | RSS | traced by tracemalloc |\n|---|---|---|\n")
    for r, t in zip(rss, traced, strict=True):
        out(f"| {r.name} | {r.rss_kb:.1f} | {t.traced_kb:.1f} |\n")
    base = traced[0]
    out(f"\n### Traced memory by area ({base.name}), KiB per session\n\n| area | KiB |\n")
    out("|---|---|\n")
    for name, kib in base.areas.items():
        if abs(kib) >= 0.05:
            out(f"| {name} | {kib:.2f} |\n")
    out("\n### Largest allocation sites, bytes per session\n\n| site | bytes |\n|---|---|\n")
    for site, size in base.lines:
        out(f"| {site} | {size:.0f} |\n")
    out("\n### The gateway's own allocation sites, bytes per session\n\n| site | bytes |\n")
    out("|---|---|\n")
    for site, size in base.ours:
        out(f"| {site} | {size:.0f} |\n")


if __name__ == "__main__":
    main()
