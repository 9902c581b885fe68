"""A fake Gemini paced like a real model, for the benchmark suite.

``tests/support/fake_gemini.py`` is scriptable but unpaced and runs in a test's thread;
this one is a standalone process (so that it can sit on the load client's core) that
answers ``POST /{version}/models/{model}:streamGenerateContent?alt=sse`` with the same
REST JSON events (built by that module's :func:`text_event`), paced like a model:

- the first piece comes ``first_ms`` after the request arrived;
- then one piece of ``piece_tokens`` tokens every ``piece_tokens / tokens_per_s`` s,
  on an absolute schedule, so a slow consumer does not slow the model down;
- a reply is ``reply_tokens`` words (a word counts as a token) of fixed English text
  whose first sentence is long and has clauses, as models' often are.

The model name can override the pace, so that one fake serves every gateway of a run:
``bench-t{tokens_per_s}-f{first_ms}-r{reply_tokens}`` (any part may be left out,
``t0`` means no pacing at all). Hand-written rather than built on the test fake because
that one holds a lock per request and a thread; this one has to stream tens of
thousands of events a second on half a core.

    .venv/bin/python bench/fake_model.py [--tokens-per-s 50] [--first-ms 300]

prints ``PORT <n>`` once it serves, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from tests.support.fake_gemini import text_event

#: The reply, cycled to the wanted length. The first sentence is long, with commas.
REPLY_TEXT = (
    "Sure, I can help with that, and here is what I found about the weather in Lisbon "
    "for the rest of the week, starting tomorrow morning. It will be sunny and warm, "
    "with a high of twenty four degrees. A light breeze comes from the west in the "
    "afternoon. Would you like me to check the forecast for another city as well? "
    "I can also tell you about the sea temperature and the best time for a walk."
)
REPLY_WORDS = tuple(REPLY_TEXT.split(" "))

_MODEL_PACE = re.compile(r"-(?P<key>[tfrp])(?P<value>\d+)")
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@dataclass(frozen=True)
class Pace:
    """How the fake model streams."""

    tokens_per_s: float = 50.0
    first_ms: float = 300.0
    reply_tokens: int = 40
    piece_tokens: int = 5

    def for_model(self, model: str) -> Pace:
        """This pace with the overrides a model name such as ``bench-t50-f300-r40`` gives."""
        pace = self
        for m in _MODEL_PACE.finditer(model):
            value = int(m.group("value"))
            key = m.group("key")
            if key == "t":
                pace = replace(pace, tokens_per_s=float(value))
            elif key == "f":
                pace = replace(pace, first_ms=float(value))
            elif key == "r":
                pace = replace(pace, reply_tokens=max(1, value))
            else:
                pace = replace(pace, piece_tokens=max(1, value))
        return pace

    @property
    def piece_s(self) -> float:
        """Seconds between two pieces (0: as fast as possible)."""
        return self.piece_tokens / self.tokens_per_s if self.tokens_per_s > 0 else 0.0


def reply_pieces(reply_tokens: int, piece_tokens: int) -> list[str]:
    """The reply's text pieces: ``reply_tokens`` words in groups of ``piece_tokens``."""
    words = [REPLY_WORDS[i % len(REPLY_WORDS)] for i in range(reply_tokens)]
    if not words[-1].endswith((".", "?", "!")):
        words[-1] += "."
    pieces = []
    for i in range(0, len(words), piece_tokens):
        group = words[i : i + piece_tokens]
        pieces.append((" " if i else "") + " ".join(group))
    return pieces


@lru_cache(maxsize=64)
def encoded_reply(reply_tokens: int, piece_tokens: int) -> tuple[bytes, ...]:
    """The reply as ready-made SSE events, the last one carrying ``STOP``."""
    pieces = reply_pieces(reply_tokens, piece_tokens)
    last = len(pieces) - 1
    return tuple(
        b"data: "
        + orjson.dumps(text_event(p, finish_reason="STOP" if i == last else None))
        + b"\r\n\r\n"
        for i, p in enumerate(pieces)
    )


class PacedModel:
    """The raw ASGI app: streams the paced reply, ignores what it was asked."""

    def __init__(self, pace: Pace) -> None:
        self.pace = pace

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        body = bytearray()
        while True:  # read (and parse, as a real server must) the whole request
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        _, _, target = scope["path"].rpartition("/models/")
        model, _, action = target.partition(":")
        if action != "streamGenerateContent" or not body:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        orjson.loads(body)
        pace = self.pace.for_model(model)
        events = encoded_reply(pace.reply_tokens, pace.piece_tokens)
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        due = arrived + pace.first_ms / 1000
        for event in events:
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await send({"type": "http.response.body", "body": event, "more_body": True})
            due += pace.piece_s
        await send({"type": "http.response.body", "body": b""})


def serve(pace: Pace, port: int = 0) -> None:
    """Serve on 127.0.0.1:``port`` (0: a free one), printing ``PORT <n>`` once bound."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        PacedModel(pace),
        log_level="warning",
        lifespan="on",
        backlog=4096,
        timeout_keep_alive=60,
    )
    server = uvicorn.Server(config)
    sys.stdout.write(f"PORT {sock.getsockname()[1]}\n")
    sys.stdout.flush()
    server.run(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens-per-s", type=float, default=Pace.tokens_per_s)
    parser.add_argument("--first-ms", type=float, default=Pace.first_ms)
    parser.add_argument("--reply-tokens", type=int, default=Pace.reply_tokens)
    parser.add_argument("--piece-tokens", type=int, default=Pace.piece_tokens)
    args = parser.parse_args()
    serve(Pace(args.tokens_per_s, args.first_ms, args.reply_tokens, args.piece_tokens), args.port)


if __name__ == "__main__":
    main()
