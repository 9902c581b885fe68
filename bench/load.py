"""The benchmark's clients: one per route, each playing closed-loop conversational turns.

A client sends a turn, reads the reply until its end marker, notes when the first
chunk came and the gaps between chunks, then (after an optional think time) sends the
next. Every route's client yields the same :class:`TurnSample`, so that the suite
compares routes, the gateway and the baselines with one set of statistics.

``python bench/load.py probe WS_URL`` is the event-loop stall probe: a native session
that pings every ``--interval-ms`` and prints the round trips (JSON, ms) on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx2
import orjson
from websockets.asyncio.client import ClientConnection, connect

_ids = itertools.count(1)


def question(i: int) -> str:
    return f"Question number {i}: what will the weather be like tomorrow, and should I go out?"


@dataclass
class TurnSample:
    """One turn as the client saw it (milliseconds from sending it)."""

    first_chunk_ms: float | None = None
    gaps_ms: list[float] = field(default_factory=list)
    total_ms: float = 0.0
    chunks: int = 0
    chars: int = 0
    ok: bool = False


class _Clock:
    """Stamps a turn's chunks."""

    def __init__(self) -> None:
        self.sample = TurnSample()
        self._start = time.perf_counter()
        self._last: float | None = None

    def chunk(self, text: str) -> None:
        now = time.perf_counter()
        if self._last is None:
            self.sample.first_chunk_ms = (now - self._start) * 1000
        else:
            self.sample.gaps_ms.append((now - self._last) * 1000)
        self._last = now
        self.sample.chunks += 1
        self.sample.chars += len(text)

    def end(self, ok: bool = True) -> TurnSample:
        self.sample.total_ms = (time.perf_counter() - self._start) * 1000
        self.sample.ok = ok and self.sample.chunks > 0
        return self.sample


# --- one conversation per route ----------------------------------------------------------


class Conversation:
    """A conversation on one route: ``open()``, ``turn(i)`` …, ``close()``."""

    async def open(self) -> None:
        """Connect and wait until the conversation is ready."""

    async def turn(self, i: int) -> TurnSample:
        raise NotImplementedError

    async def close(self) -> None:
        """Leave."""


class NativeConversation(Conversation):
    """``/ws`` (and the raw relay, which speaks the same events)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._ws: ClientConnection | None = None

    async def open(self) -> None:
        self._ws = await connect(self._url, max_size=None, open_timeout=60)
        await self._ws.recv()  # session.ready

    async def turn(self, i: int) -> TurnSample:
        assert self._ws is not None
        clock = _Clock()
        await self._ws.send(question(i))
        while True:
            event = orjson.loads(await self._ws.recv())
            kind = event["type"]
            if kind == "response.tts":
                clock.chunk(event["text"])
            elif kind == "response.end":
                return clock.end(event.get("status", "completed") == "completed")

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()


class TwilioConversation(Conversation):
    """``/twilio``: ConversationRelay ``setup``, ``prompt``, ``text`` tokens."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._ws: ClientConnection | None = None

    async def open(self) -> None:
        self._ws = await connect(self._url, max_size=None, open_timeout=60)
        call = f"CA{next(_ids):032d}"
        setup = {"type": "setup", "sessionId": f"VX{call[2:]}", "callSid": call, "from": "+1"}
        await self._ws.send(orjson.dumps(setup).decode())

    async def turn(self, i: int) -> TurnSample:
        assert self._ws is not None
        clock = _Clock()
        prompt = {"type": "prompt", "voicePrompt": question(i), "lang": "en-US", "last": True}
        await self._ws.send(orjson.dumps(prompt).decode())
        while True:
            frame = orjson.loads(await self._ws.recv())
            if frame.get("type") != "text":
                continue
            if frame.get("token"):
                clock.chunk(frame["token"])
            if frame.get("last"):
                return clock.end()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()


class RetellConversation(Conversation):
    """``/retell/{call_id}``: ``response_required`` with the whole transcript."""

    def __init__(self, base: str) -> None:
        self._url = f"{base}/call_{next(_ids)}"
        self._ws: ClientConnection | None = None
        self._transcript: list[dict[str, str]] = []

    async def open(self) -> None:
        self._ws = await connect(self._url, max_size=None, open_timeout=60)

    async def turn(self, i: int) -> TurnSample:
        assert self._ws is not None
        self._transcript.append({"role": "user", "content": question(i)})
        ask = {"interaction_type": "response_required", "response_id": i + 1}
        ask["transcript"] = self._transcript  # type: ignore[assignment]
        clock = _Clock()
        await self._ws.send(orjson.dumps(ask).decode())
        reply: list[str] = []
        while True:
            frame = orjson.loads(await self._ws.recv())
            if frame.get("response_type") != "response" or frame.get("response_id") != i + 1:
                continue
            if frame.get("content"):
                clock.chunk(frame["content"])
                reply.append(frame["content"])
            if frame.get("content_complete"):
                self._transcript.append({"role": "agent", "content": "".join(reply)})
                return clock.end()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()


async def _sse_turn(
    http: httpx2.AsyncClient, path: str, body: dict[str, object], text_of: Callable[[dict], str]
) -> tuple[TurnSample, str]:
    clock = _Clock()
    reply: list[str] = []
    async with http.stream("POST", path, json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                break
            event = orjson.loads(line[6:])
            if event.get("type") == "response.end":
                break
            if text := text_of(event):
                clock.chunk(text)
                reply.append(text)
    return clock.end(response.status_code == 200), "".join(reply)


def _openai_text(event: dict) -> str:
    choices = event.get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or ""


def _layercode_text(event: dict) -> str:
    return event.get("content", "") if event.get("type") == "response.tts" else ""


class OpenAIConversation(Conversation):
    """``POST /v1/chat/completions`` with ``stream: true`` and the whole conversation."""

    def __init__(self, http: httpx2.AsyncClient) -> None:
        self._http = http
        self._messages: list[dict[str, str]] = []

    async def turn(self, i: int) -> TurnSample:
        self._messages.append({"role": "user", "content": question(i)})
        body = {"model": "gateway", "stream": True, "messages": self._messages}
        sample, reply = await _sse_turn(self._http, "/v1/chat/completions", body, _openai_text)
        self._messages.append({"role": "assistant", "content": reply})
        return sample


class LayercodeConversation(Conversation):
    """``POST /layercode/agent`` webhooks of one conversation."""

    def __init__(self, http: httpx2.AsyncClient) -> None:
        self._http = http
        self._conversation = f"conv_{next(_ids)}"

    async def turn(self, i: int) -> TurnSample:
        body = {
            "type": "message",
            "session_id": f"sess_{self._conversation}",
            "conversation_id": self._conversation,
            "turn_id": f"turn_{i}",
            "text": question(i),
        }
        sample, _ = await _sse_turn(self._http, "/layercode/agent", body, _layercode_text)
        return sample


class ModelConversation(Conversation):
    """The fake model alone: the same question straight to its REST API."""

    def __init__(self, http: httpx2.AsyncClient, model: str) -> None:
        self._http = http
        self._path = f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
        self._contents: list[dict[str, object]] = []

    async def turn(self, i: int) -> TurnSample:
        self._contents.append({"role": "user", "parts": [{"text": question(i)}]})
        body = {"contents": self._contents}
        sample, reply = await _sse_turn(self._http, self._path, body, _gemini_text)
        self._contents.append({"role": "model", "parts": [{"text": reply}]})
        return sample


def _gemini_text(event: dict) -> str:
    for candidate in event.get("candidates", ())[:1]:
        return "".join(p.get("text", "") for p in candidate.get("content", {}).get("parts", ()))
    return ""


def http_client(base_url: str) -> httpx2.AsyncClient:
    """An unbounded pool, so that the client never is what queues turns."""
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
    return httpx2.AsyncClient(base_url=base_url, limits=limits, timeout=120)


# --- load ----------------------------------------------------------------------------


@dataclass
class LoadResult:
    samples: list[TurnSample]
    elapsed_s: float
    errors: int


async def run_load(
    make: Callable[[], Conversation],
    sessions: int,
    turns: int,
    *,
    think_s: float = 0.0,
    spread_s: float = 1.0,
    on_ready: Callable[[], Awaitable[None]] | None = None,
    on_done: Callable[[], Awaitable[None]] | None = None,
    turn_timeout_s: float = 300.0,
) -> LoadResult:
    """``sessions`` conversations of ``turns`` turns each, all at once.

    Every conversation connects first (outside the measured window); then
    ``on_ready()`` runs (the caller reads CPU there), and each conversation starts
    at a random point within ``spread_s`` so that turns do not march in lockstep.
    ``on_done()`` runs once the last turn ended, before the conversations close.
    """
    conversations = [make() for _ in range(sessions)]
    opening = asyncio.Semaphore(64)

    async def open_one(c: Conversation) -> None:
        async with opening:
            await c.open()

    await asyncio.gather(*(open_one(c) for c in conversations))
    if on_ready is not None:
        await on_ready()
    samples: list[TurnSample] = []
    errors = 0

    async def play(c: Conversation) -> None:
        nonlocal errors
        await asyncio.sleep(random.uniform(0, spread_s))
        for i in range(turns):
            try:
                sample = await asyncio.wait_for(c.turn(i), turn_timeout_s)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                errors += 1
                return
            samples.append(sample)
            if not sample.ok:
                errors += 1
            if think_s:
                await asyncio.sleep(random.uniform(0.5, 1.5) * think_s)

    start = time.perf_counter()
    await asyncio.gather(*(play(c) for c in conversations))
    elapsed = time.perf_counter() - start
    if on_done is not None:
        await on_done()
    await asyncio.gather(*(c.close() for c in conversations), return_exceptions=True)
    return LoadResult(samples, elapsed, errors)


# --- the stall probe -----------------------------------------------------------------------


async def probe(url: str, interval_s: float) -> list[float]:
    """Ping over a native session every ``interval_s`` until SIGTERM; the round trips."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    rtts: list[float] = []
    async with connect(url, max_size=None) as ws:
        await ws.recv()
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        n = 0
        while not stop.is_set():
            n += 1
            sent = time.perf_counter()
            await ws.send(orjson.dumps({"type": "ping", "id": n}).decode())
            while True:
                event = orjson.loads(await ws.recv())
                if event.get("type") == "pong" and event.get("id") == n:
                    break
            rtts.append((time.perf_counter() - sent) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    return rtts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe")
    p.add_argument("url")
    p.add_argument("--interval-ms", type=float, default=20)
    args = parser.parse_args()
    rtts = asyncio.run(probe(args.url, args.interval_ms / 1000))
    sys.stdout.write(orjson.dumps(rtts).decode() + "\n")


if __name__ == "__main__":
    main()
