"""A scriptable fake of an OpenAI-compatible Chat Completions server, over real HTTP.

:class:`FakeOpenAI` runs a Starlette app under real uvicorn and answers
``POST /v1/chat/completions``: streamed (Server-Sent Events ``data: {chunk}``
lines ending with ``data: [DONE]``, as OpenAI, Groq, vLLM and Ollama send them)
or whole. Point the real ``openai`` SDK at it with ``base_url=fake.url``
(``OPENAI_BASE_URL``); ``url`` ends in ``/v1``.

Scripts queue up, one per request; with none queued the fake echoes the last user
message in three chunks, then a usage chunk when the request asked for
``stream_options.include_usage``. Each script's ``threading.Event`` attributes
(``started``, ``client_gone``, ``finished``) tell tests what happened, so they
wait on events, not sleeps. State shared with the server thread is behind a lock.

The ``fake_openai`` fixture hands out one session-wide server, reset around each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.support.servers import RunningServer, running

ScriptKind = Literal["chunks", "error", "cut", "malformed", "stall"]

_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_JSON_HEADERS = [(b"content-type", b"application/json")]
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}


def chunk(
    content: str | None = None, *, finish_reason: str | None = None, role: str | None = None
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with one choice."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def usage_chunk(
    prompt: int, completion: int, *, cached: int | None = None, reasoning: int | None = None
) -> dict[str, Any]:
    """The final chunk ``include_usage`` asks for: no choices, the usage."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return {**chunk(), "choices": [], "usage": usage}


def _sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    body: Any

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []

    @property
    def roles(self) -> list[str]:
        return [m.get("role", "") for m in self.messages]

    @property
    def last_user_text(self) -> str | None:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                return content if isinstance(content, str) else None
        return None


@dataclass
class Script:
    """One scripted answer, consumed by the next request."""

    kind: ScriptKind
    chunks: list[dict[str, Any] | str] = field(default_factory=list)
    delay_s: float = 0.0
    status: int = 200
    error_body: dict[str, Any] | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    raw: bytes = b""
    done: bool = True
    stall_timeout_s: float = 30.0
    started: threading.Event = field(default_factory=threading.Event)
    client_gone: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _Play(Response):
    """Plays one :class:`Script` at the raw ASGI level, watching for disconnects."""

    def __init__(self, fake: FakeOpenAI, script: Script, *, streaming: bool) -> None:
        super().__init__()
        self._fake = fake
        self._script = script
        self._streaming = streaming

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        script = self._script
        release = self._fake._release_event()
        disconnected = asyncio.ensure_future(_until_disconnect(receive))
        released = asyncio.ensure_future(release.wait())
        try:
            if await self._play(send, disconnected, released):
                script.client_gone.set()
        finally:
            disconnected.cancel()
            released.cancel()
            await asyncio.wait({disconnected, released})
            script.finished.set()

    async def _play(
        self, send: Send, disconnected: asyncio.Future[Any], released: asyncio.Future[Any]
    ) -> bool:
        script = self._script
        if script.kind == "error":
            body = json.dumps(script.error_body).encode()
            headers = [*_JSON_HEADERS, *script.headers]
            await send({"type": "http.response.start", "status": script.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return False
        if not self._streaming:
            body = json.dumps(_merge(script.chunks)).encode()
            await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
            await send({"type": "http.response.body", "body": body})
            return False
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        for index, data in enumerate(script.chunks):
            if index and script.delay_s:
                done, _ = await asyncio.wait({disconnected}, timeout=script.delay_s)
                if done:
                    return True
            if disconnected.done():
                return True
            await send({"type": "http.response.body", "body": _sse(data), "more_body": True})
        if script.kind == "cut":
            return False  # uvicorn closes the connection mid-body
        if script.kind == "malformed":
            await send({"type": "http.response.body", "body": script.raw, "more_body": True})
        elif script.kind == "stall":
            done, _ = await asyncio.wait(
                {disconnected, released},
                timeout=script.stall_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if disconnected in done:
                return True
        tail = _sse("[DONE]") if script.done and script.kind == "chunks" else b""
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        return False


def _merge(chunks: list[dict[str, Any] | str]) -> dict[str, Any]:
    """Fold streamed chunks into one ``chat.completion``."""
    text = ""
    finish = "stop"
    for data in chunks:
        if isinstance(data, dict):
            for choice in data.get("choices", [])[:1]:
                text += choice.get("delta", {}).get("content") or ""
                finish = choice.get("finish_reason") or finish
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }
        ],
    }


class FakeOpenAI:
    """A scriptable OpenAI-compatible server. Use as a context manager or via the fixture."""

    def __init__(self, *, stall_timeout_s: float = 30.0) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._scripts: deque[Script] = deque()
        self._requests: list[RecordedRequest] = []
        self._server: RunningServer | None = None
        self._stack = contextlib.ExitStack()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._stall_timeout_s = stall_timeout_s
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._handle, methods=["POST"])])

    def __enter__(self) -> FakeOpenAI:
        self._server = self._stack.enter_context(running(self.app, timeout_graceful_shutdown=5))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.reset()
        self._stack.close()

    def reset(self) -> None:
        """Forget scripts and requests, and end any stalled stream."""
        with self._lock:
            self._scripts.clear()
            self._requests.clear()
            loop, release = self._loop, self._release
            self._release = None
        if loop is not None and release is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(release.set)

    @property
    def url(self) -> str:
        """The API root to hand the SDK as ``base_url`` (ends in ``/v1``)."""
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not running")
        return self._server.http_url + "/v1"

    # -- scripting ---------------------------------------------------------------

    def _push(self, script: Script) -> Script:
        with self._lock:
            self._scripts.append(script)
        return script

    def reply(
        self,
        pieces: list[str],
        *,
        finish_reason: str | None = "stop",
        usage: tuple[int, int] | None = None,
        delay_s: float = 0.0,
    ) -> Script:
        """Stream one chunk per piece (the first with the role), a final chunk with
        ``finish_reason``, a usage chunk if ``usage`` is given, then ``[DONE]``."""
        chunks: list[dict[str, Any] | str] = [chunk(role="assistant", content="")]
        chunks += [chunk(p) for p in pieces]
        if finish_reason is not None:
            chunks.append(chunk(finish_reason=finish_reason))
        if usage is not None:
            chunks.append(usage_chunk(*usage))
        return self._push(Script("chunks", chunks=chunks, delay_s=delay_s))

    def reply_raw(self, chunks: list[dict[str, Any] | str], *, done: bool = True) -> Script:
        """Stream these chunk objects (a ``str`` is sent as the data line itself)."""
        return self._push(Script("chunks", chunks=list(chunks), done=done))

    def fail(
        self,
        status: int,
        message: str = "scripted failure",
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Script:
        """Answer with an OpenAI-style error body and HTTP ``status``."""
        body = {
            "error": {
                "message": message,
                "type": ERROR_TYPES.get(status, "api_error"),
                "param": None,
                "code": code,
            }
        }
        extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        return self._push(Script("error", status=status, error_body=body, headers=extra))

    def cut_after(self, pieces: list[str]) -> Script:
        """Stream ``pieces``, then drop the connection mid-body."""
        return self._push(Script("cut", chunks=[chunk(p) for p in pieces]))

    def malformed(self, after: list[str] | None = None, raw: bytes = b"data: {oops\n\n") -> Script:
        """Stream ``after``, then ``raw`` garbage, then end the response."""
        return self._push(Script("malformed", chunks=[chunk(p) for p in after or []], raw=raw))

    def stall(self, after: list[str] | None = None) -> Script:
        """Stream ``after``, then hold the response open until the client leaves."""
        return self._push(
            Script(
                "stall",
                chunks=[chunk(p) for p in after or []],
                stall_timeout_s=self._stall_timeout_s,
            )
        )

    # -- observation -------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests arrived; return them all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= n, timeout):
                raise AssertionError(f"expected {n} request(s), got {len(self._requests)}")
            return list(self._requests)

    # -- server side -------------------------------------------------------------

    def _release_event(self) -> asyncio.Event:
        with self._lock:
            if self._release is None:
                self._loop = asyncio.get_running_loop()
                self._release = asyncio.Event()
            return self._release

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        recorded = RecordedRequest(
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        with self._changed:
            self._requests.append(recorded)
            self._changed.notify_all()
            script = self._scripts.popleft() if self._scripts else None
        streaming = isinstance(body, dict) and bool(body.get("stream"))
        if script is None:
            said = recorded.last_user_text or "nothing"
            options = body.get("stream_options") if isinstance(body, dict) else None
            wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            chunks: list[dict[str, Any] | str] = [chunk(role="assistant", content="")]
            chunks += [chunk(p) for p in ("You said: ", f"{said}.", " That is all.")]
            chunks.append(chunk(finish_reason="stop"))
            if wants_usage:
                chunks.append(usage_chunk(10, 5))
            script = Script("chunks", chunks=chunks)
        script.started.set()
        return _Play(self, script, streaming=streaming)


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    """One :class:`FakeOpenAI` server for the whole session."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_openai(fake_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The session's :class:`FakeOpenAI`, reset before and after the test."""
    fake_openai_server.reset()
    yield fake_openai_server
    fake_openai_server.reset()
