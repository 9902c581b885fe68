"""A scriptable fake of the Gemini REST API, served over real HTTP.

:class:`FakeGemini` runs a Starlette app under real uvicorn (see
:mod:`tests.support.servers`) and answers ``POST /{version}/models/{model}:streamGenerateContent``
(Server-Sent Events, as the google-genai SDK requests with ``?alt=sse``) and, for
replies and failures, the non-streaming ``:generateContent``. Point the real SDK at
it with ``HttpOptions(base_url=fake.url)`` (or ``GEMINI_BASE_URL=fake.url``).

Tests script replies in a FIFO queue, one entry per incoming request; when the
queue is empty the fake echoes the last user text. Every scripting method returns
a :class:`Script` whose ``threading.Event`` attributes say what happened to it
(``started``, ``client_gone``, ``finished``), so tests wait on events, not sleeps.
The server runs in another thread: all shared state sits behind one lock.

The ``fake_gemini`` fixture hands out one session-wide server, reset around each
test (``reset()`` also ends streams a test left stalled).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.support.servers import RunningServer, running

ScriptKind = Literal["events", "error", "cut", "malformed", "stall"]

#: Google's canonical status name for the HTTP statuses tests use.
STATUS_NAMES: Mapping[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_JSON_HEADERS = [(b"content-type", b"application/json; charset=UTF-8")]


def text_event(
    text: str, *, finish_reason: str | None = None, thought: bool = False
) -> dict[str, Any]:
    """One GenerateContentResponse JSON object carrying ``text`` (REST casing)."""
    part: dict[str, Any] = {"text": text}
    if thought:
        part["thought"] = True
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    event: dict[str, Any] = {"candidates": [candidate], "modelVersion": "fake-gemini"}
    if finish_reason is not None:
        event["usageMetadata"] = {"promptTokenCount": 1, "candidatesTokenCount": 1}
    return event


def function_call_event(
    name: str,
    args: Mapping[str, Any] | None = None,
    *,
    call_id: str | None = None,
    text: str | None = None,
    signature: str | None = None,
    more: list[dict[str, Any]] | None = None,
    finish_reason: str | None = "STOP",
) -> dict[str, Any]:
    """A GenerateContentResponse whose model content calls ``name`` (REST casing):
    optional ``text`` first, then the ``functionCall`` part (with ``id`` and a
    ``thoughtSignature`` when given), then the ``more`` parts (further calls)."""
    call: dict[str, Any] = {"name": name, "args": dict(args or {})}
    if call_id is not None:
        call["id"] = call_id
    part: dict[str, Any] = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = signature
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    parts += [part, *(more or [])]
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    return {"candidates": [candidate], "modelVersion": "fake-gemini"}


def call_part(name: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One more ``functionCall`` part for :func:`function_call_event`'s ``more``."""
    return {"functionCall": {"name": name, "args": dict(args or {})}}


def finish_event(finish_reason: str = "STOP") -> dict[str, Any]:
    """A final event with a finish reason and no content."""
    return {
        "candidates": [{"finishReason": finish_reason, "index": 0}],
        "modelVersion": "fake-gemini",
    }


def prompt_blocked_event(block_reason: str = "SAFETY") -> dict[str, Any]:
    """The single event Gemini sends when it blocks the prompt itself."""
    return {"promptFeedback": {"blockReason": block_reason}, "modelVersion": "fake-gemini"}


def split_text(text: str, chunk_size: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``chunk_size`` characters."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    return [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)] or [""]


def _sse(event: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\r\n\r\n"


async def wait_event(event: threading.Event, limit_s: float = 5.0) -> bool:
    """Wait for a ``threading.Event`` from async code without blocking the loop."""
    return await asyncio.to_thread(event.wait, limit_s)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    path: str
    version: str
    model: str
    action: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    #: The client's (host, port): requests with the same one came over one connection.
    client: tuple[str, int] | None = None

    @property
    def contents(self) -> list[dict[str, Any]]:
        """The request's ``contents`` (empty when absent or the body is not JSON)."""
        if isinstance(self.body, dict):
            contents = self.body.get("contents")
            if isinstance(contents, list):
                return contents
        return []

    @property
    def turns(self) -> list[tuple[str, list[str]]]:
        """``contents`` as ``(role, [part texts])`` pairs."""
        return [
            (c.get("role", ""), [p.get("text", "") for p in c.get("parts", [])])
            for c in self.contents
        ]

    @property
    def system_text(self) -> str | None:
        """The text of ``systemInstruction``, parts joined by newlines."""
        if not isinstance(self.body, dict):
            return None
        si = self.body.get("systemInstruction") or self.body.get("system_instruction")
        if not isinstance(si, dict):
            return None
        return "\n".join(p.get("text", "") for p in si.get("parts", []))

    @property
    def last_user_text(self) -> str | None:
        """Text of the last ``user`` content, or None."""
        for role, texts in reversed(self.turns):
            if role == "user":
                return " ".join(texts)
        return None


@dataclass
class Script:
    """One scripted reply, consumed by the next request."""

    kind: ScriptKind
    events: list[dict[str, Any]] = field(default_factory=list)
    delay_s: float = 0.0
    status: int = 200
    error_body: dict[str, Any] | None = None
    raw: bytes = b""
    stall_timeout_s: float = 30.0
    #: A request picked this script.
    started: threading.Event = field(default_factory=threading.Event)
    #: The client went away before the response was complete.
    client_gone: threading.Event = field(default_factory=threading.Event)
    #: The server is done with this script (normally or not).
    finished: threading.Event = field(default_factory=threading.Event)


async def _until_disconnect(receive: Receive) -> None:
    """Return once the client disconnects (or the response is complete)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _Play(Response):
    """Plays one :class:`Script` at the raw ASGI level, watching for disconnects."""

    def __init__(self, fake: FakeGemini, script: Script, *, streaming: bool) -> None:
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
                self._fake.client_gone.set()
        finally:
            disconnected.cancel()
            released.cancel()
            await asyncio.wait({disconnected, released})
            script.finished.set()

    async def _play(
        self, send: Send, disconnected: asyncio.Future[Any], released: asyncio.Future[Any]
    ) -> bool:
        """Send the scripted response; return True if the client went away early."""
        script = self._script
        if script.kind == "error":
            body = json.dumps(script.error_body).encode()
            await send(
                {"type": "http.response.start", "status": script.status, "headers": _JSON_HEADERS}
            )
            await send({"type": "http.response.body", "body": body})
            return False
        if script.kind == "events" and not self._streaming:
            body = json.dumps(_merge_events(script.events)).encode()
            await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
            await send({"type": "http.response.body", "body": body})
            return False

        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        for index, event in enumerate(script.events):
            if index and script.delay_s:
                done, _ = await asyncio.wait({disconnected}, timeout=script.delay_s)
                if done:
                    return True
            if disconnected.done():
                return True
            await send({"type": "http.response.body", "body": _sse(event), "more_body": True})
        if script.kind == "cut":
            # Returning without completing the response makes uvicorn close the
            # connection mid-body (it logs "returned without completing response").
            return False
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
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return False


def _merge_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold streamed events into one non-streaming response."""
    text = "".join(
        part.get("text", "")
        for event in events
        for candidate in event.get("candidates", [])[:1]
        for part in candidate.get("content", {}).get("parts", [])
        if not part.get("thought")
    )
    finish = next(
        (
            c["finishReason"]
            for e in reversed(events)
            for c in e.get("candidates", [])[:1]
            if "finishReason" in c
        ),
        "STOP",
    )
    return text_event(text, finish_reason=finish)


class FakeGemini:
    """A scriptable Gemini REST server. Use as a context manager or via the fixture."""

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
        #: Set whenever any client disconnects before its response was complete.
        self.client_gone = threading.Event()
        self.app = Starlette(
            routes=[Route("/{version}/models/{target}", self._handle, methods=["POST"])]
        )

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> FakeGemini:
        self._server = self._stack.enter_context(running(self.app, timeout_graceful_shutdown=5))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.reset()  # stalled streams end, so uvicorn can shut down promptly
        self._stack.close()

    def reset(self) -> None:
        """Forget scripts, requests and events, and end any stalled stream."""
        with self._lock:
            self._scripts.clear()
            self._requests.clear()
            self.client_gone = threading.Event()
            loop, release = self._loop, self._release
            self._release = None  # the next stream makes a fresh one
        if loop is not None and release is not None:
            with contextlib.suppress(RuntimeError):  # the server loop has stopped
                loop.call_soon_threadsafe(release.set)

    @property
    def url(self) -> str:
        """Base URL to hand to the SDK as ``HttpOptions.base_url``."""
        if self._server is None:
            raise RuntimeError("FakeGemini is not running")
        return self._server.http_url

    # -- scripting ---------------------------------------------------------------

    def _push(self, script: Script) -> Script:
        with self._lock:
            self._scripts.append(script)
        return script

    def reply(self, text: str, *, chunk_size: int = 8, delay_s: float = 0.0) -> Script:
        """Stream ``text`` in pieces of ``chunk_size`` characters, the last one with STOP."""
        return self.reply_chunks(split_text(text, chunk_size), delay_s=delay_s)

    def reply_chunks(
        self, chunks: list[str], *, delay_s: float = 0.0, finish_reason: str = "STOP"
    ) -> Script:
        """Stream one event per chunk; the last event carries ``finish_reason``."""
        events = [
            text_event(c, finish_reason=finish_reason if i == len(chunks) - 1 else None)
            for i, c in enumerate(chunks)
        ]
        return self.reply_events(events, delay_s=delay_s)

    def reply_events(self, events: list[dict[str, Any]], *, delay_s: float = 0.0) -> Script:
        """Stream arbitrary GenerateContentResponse JSON objects (see :func:`text_event`)."""
        return self._push(Script("events", events=list(events), delay_s=delay_s))

    def fail(
        self, status: int, message: str = "scripted failure", *, reason: str | None = None
    ) -> Script:
        """Answer with a Gemini-style JSON error body and HTTP ``status``; ``reason``
        adds a ``google.rpc.ErrorInfo`` detail (``API_KEY_INVALID``...)."""
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": STATUS_NAMES.get(status, "UNKNOWN"),
        }
        if reason is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
        return self._push(Script("error", status=status, error_body={"error": error}))

    def bad_key(self) -> Script:
        """What Google answers a wrong API key: 400 INVALID_ARGUMENT, API_KEY_INVALID."""
        return self.fail(
            400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
        )

    def cut_after(self, chunks: list[str], *, delay_s: float = 0.0) -> Script:
        """Stream ``chunks`` (no finish reason), then drop the connection mid-body."""
        return self._push(Script("cut", events=[text_event(c) for c in chunks], delay_s=delay_s))

    def malformed(
        self, *, after_chunks: list[str] | None = None, raw: bytes = b"data: {not json\r\n\r\n"
    ) -> Script:
        """Stream ``after_chunks``, then ``raw`` garbage, then end the response."""
        events = [text_event(c) for c in after_chunks or []]
        return self._push(Script("malformed", events=events, raw=raw))

    def stall(self, after_chunks: list[str] | None = None) -> Script:
        """Stream ``after_chunks``, then hold the response open until the client leaves."""
        events = [text_event(c) for c in after_chunks or []]
        return self._push(Script("stall", events=events, stall_timeout_s=self._stall_timeout_s))

    # -- observation -------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far."""
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests arrived; return them all.

        From async code, call this only once the client has its response (the
        request is recorded before any byte is answered), or use ``asyncio.to_thread``.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= n, timeout):
                raise AssertionError(f"expected {n} request(s), got {len(self._requests)}")
            return list(self._requests)

    # -- server side -------------------------------------------------------------

    def _release_event(self) -> asyncio.Event:
        """The server loop's shutdown event (created on first use, in that loop)."""
        with self._lock:
            if self._release is None:
                self._loop = asyncio.get_running_loop()
                self._release = asyncio.Event()
            return self._release

    async def _handle(self, request: Request) -> Response:
        version = request.path_params["version"]
        model, _, action = request.path_params["target"].partition(":")
        if action not in ("streamGenerateContent", "generateContent"):
            return Response(status_code=404)
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        recorded = RecordedRequest(
            path=request.url.path,
            version=version,
            model=model,
            action=action,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            client=(request.client.host, request.client.port) if request.client else None,
        )
        with self._changed:
            self._requests.append(recorded)
            self._changed.notify_all()
            script = self._scripts.popleft() if self._scripts else None
        if script is None:
            said = recorded.last_user_text or "nothing"
            events = [
                text_event(c, finish_reason="STOP" if i == 2 else None)
                for i, c in enumerate(["You said: ", f"{said}.", " That is all."])
            ]
            script = Script("events", events=events)
        script.started.set()
        return _Play(self, script, streaming=action == "streamGenerateContent")


@pytest.fixture(scope="session")
def fake_gemini_server() -> Iterator[FakeGemini]:
    """One :class:`FakeGemini` server for the whole session (starting uvicorn costs)."""
    with FakeGemini() as fake:
        yield fake


@pytest.fixture
def fake_gemini(fake_gemini_server: FakeGemini) -> Iterator[FakeGemini]:
    """The session's :class:`FakeGemini`, reset before and after the test."""
    fake_gemini_server.reset()
    yield fake_gemini_server
    fake_gemini_server.reset()
