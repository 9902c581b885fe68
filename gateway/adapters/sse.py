"""Server-Sent Events plumbing shared by the HTTP adapters (Layercode, OpenAI-compatible).

- :class:`TurnFollower` is a :class:`~gateway.runtime.ClientSink` that follows the
  one turn its request started: it attaches to a runtime, feeds it one client
  event and yields :data:`TurnUpdate` values until that turn is over.
- :class:`SseResponse` streams the frames of an async generator while it watches
  for the client going away; when it does, the generator is cancelled and closed,
  so its ``finally`` (detach the sink, stop an ephemeral runtime) always runs.
- :func:`sse_data` formats one ``data: {json}`` event; :func:`read_body` reads a
  request body with a size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.core.events import (
    ClientEvent,
    Error,
    Interrupt,
    ResponseCallControl,
    ResponseEnd,
    ResponseFunctionCall,
    ResponseFunctionResult,
    ResponseTts,
    ServerEvent,
    SessionEnded,
    SessionReady,
    UserDuplicate,
)
from gateway.core.replay import LoggedEvent
from gateway.errors import RequestError
from gateway.runtime import SessionRuntime

log = logging.getLogger("gateway.adapters.sse")

#: The OpenAI stream terminator.
SSE_DONE: Final = b"data: [DONE]\n\n"

SSE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


def sse_data(payload: Any) -> bytes:
    """One SSE event carrying ``payload`` as JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class BodyTooLarge(RequestError):
    """The request body is longer than the adapter accepts."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading it all.

    Raises :class:`BodyTooLarge`, or Starlette's ``ClientDisconnect``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


# --- following one turn ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    """A TTS-ready chunk of the turn."""

    text: str
    index: int


@dataclass(frozen=True, slots=True)
class Failure:
    """The provider failed this turn; its :class:`Ended` follows."""

    error: Error


@dataclass(frozen=True, slots=True)
class Ended:
    """The turn is over (last update)."""

    end: ResponseEnd


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The event repeated a message id already answered: no turn (last update)."""

    event: UserDuplicate


@dataclass(frozen=True, slots=True)
class Rejected:
    """The core refused the event (empty or too long text): no turn (last update)."""

    error: Error


@dataclass(frozen=True, slots=True)
class Cut:
    """This request lost the session: another request took it over, or the
    runtime stopped (last update)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Called:
    """The model called a function in this turn (a client function, or call
    control the gateway already answered)."""

    event: ResponseFunctionCall | ResponseCallControl


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A server tool answered a call of this turn."""

    event: ResponseFunctionResult


TurnUpdate = Chunk | Called | ToolResult | Failure | Ended | Duplicate | Rejected | Cut


class _Gone:
    """Queue marker: nothing more will arrive."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class TurnFollower:
    """A client sink that follows the one turn its request starts.

    :meth:`start` attaches it and feeds the event; iterating it yields what
    happens to the turn; :meth:`aclose` must always be awaited (in a ``finally``):
    it detaches, and when the turn was left unfinished by the caller (the HTTP
    client went away) it interrupts the turn at what was handed out so far.
    """

    def __init__(self, runtime: SessionRuntime) -> None:
        self._runtime = runtime
        self._queue: asyncio.Queue[ServerEvent | _Gone] = asyncio.Queue()
        self._closed = False
        self._watch: asyncio.Task[None] | None = None
        self._settled = False
        #: The turn the event started (``None``: it started none).
        self.turn_id: str | None = None
        #: ``session.ready`` of this attachment (provider, model, language).
        self.ready: SessionReady | None = None
        #: Chunks handed out so far.
        self.chunks: list[str] = []

    # --- ClientSink ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def deliver(self, frame: LoggedEvent, event: ServerEvent | None = None) -> None:
        if not self._closed and event is not None:
            self._queue.put_nowait(event)

    def replay(self, frames: Sequence[LoggedEvent]) -> None:
        """Never asked for: a follower attaches fresh, with no ``last_seq``."""

    def close(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_Gone(reason))

    def abort(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(_Gone(reason))

    # --- driving -------------------------------------------------------------------

    def start(self, event: ClientEvent) -> None:
        """Attach to the runtime and feed it ``event`` (no await in between, so
        everything after ``session.ready`` is this event's doing)."""
        runtime = self._runtime
        runtime.attach(self, resume_token="", last_seq=None)
        before = runtime.session.streaming_turn_id
        runtime.receive(event)
        after = runtime.session.streaming_turn_id
        self.turn_id = after if after is not None and after != before else None
        self._watch = asyncio.get_running_loop().create_task(
            runtime.stopped(), name=f"follow:{runtime.session.id}"
        )
        self._watch.add_done_callback(self._runtime_stopped)

    def _runtime_stopped(self, _: asyncio.Task[None]) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_Gone("the session stopped"))

    def __aiter__(self) -> TurnFollower:
        return self

    async def __anext__(self) -> TurnUpdate:
        """The next thing that happened to the turn; the iteration stops after a
        last update (:class:`Ended`, :class:`Duplicate`, :class:`Rejected`, :class:`Cut`)."""
        while not self._settled:
            update = self._interpret(await self._queue.get())
            if update is None:
                continue
            if isinstance(update, Chunk):
                self.chunks.append(update.text)
            elif not isinstance(update, Failure | Called | ToolResult):
                self._settled = True
            return update
        raise StopAsyncIteration

    def _interpret(self, item: ServerEvent | _Gone) -> TurnUpdate | None:
        turn_id = self.turn_id
        match item:
            case _Gone(reason=reason):
                return Cut(reason)
            case SessionReady():
                self.ready = item
            case ResponseTts() if item.turn_id == turn_id:
                return Chunk(item.text, item.index)
            case ResponseFunctionCall() | ResponseCallControl() if item.turn_id == turn_id:
                return Called(item)
            case ResponseFunctionResult() if item.turn_id == turn_id:
                return ToolResult(item)
            case Error() if item.turn_id is not None and item.turn_id == turn_id:
                return Failure(item)
            case Error() if item.turn_id is None and turn_id is None:
                return Rejected(item)
            case UserDuplicate() if turn_id is None:
                return Duplicate(item)
            case ResponseEnd() if item.turn_id == turn_id:
                return Ended(item)
            case SessionEnded():
                return Cut(item.reason)
        return None

    async def aclose(self, *, interrupt: bool = True) -> None:
        """Detach; interrupt the turn at what was handed out if it is unfinished."""
        self._closed = True
        runtime = self._runtime
        if interrupt and not self._settled and self.turn_id is not None and not runtime.stopping:
            runtime.receive(Interrupt(turn_id=self.turn_id, heard_text=" ".join(self.chunks)))
        runtime.detach(self)
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.remove_done_callback(self._runtime_stopped)
            watch.cancel()
            await asyncio.wait({watch})


# --- the response --------------------------------------------------------------------

Frames = AsyncGenerator[bytes | Response, None]


async def _until_disconnect(receive: Receive) -> None:
    message = await receive()
    while message["type"] != "http.disconnect":
        message = await receive()


class SseResponse(Response):
    """Streams ``frames`` as ``text/event-stream``, cancelling them when the client leaves.

    The generator may yield one whole :class:`Response` *first* instead of frames:
    it is sent in place of the stream (an error found before anything was
    streamed, or a non-streaming answer computed under the same disconnect watch).
    Whatever happens, the generator is closed before this returns.
    """

    media_type = "text/event-stream"

    def __init__(self, frames: Frames) -> None:
        # Not Response.__init__: that would announce a Content-Length of 0.
        self._frames = frames
        self.status_code = 200
        self.background = None
        self.init_headers(SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        streaming = loop.create_task(self._stream(scope, receive, send), name="sse:stream")
        watching = loop.create_task(_until_disconnect(receive), name="sse:disconnect")
        try:
            await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            streaming.cancel()
            watching.cancel()
            await asyncio.wait({streaming, watching})
            await self._frames.aclose()
        if not streaming.cancelled() and (exc := streaming.exception()) is not None:
            raise exc

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            first = await anext(self._frames, None)
            if isinstance(first, Response):
                await first(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if first is not None:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                async for frame in self._frames:
                    if not isinstance(frame, bytes):
                        raise TypeError("a Response can only be the first item of an SSE stream")
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (OSError, ClientDisconnect):
            log.debug("SSE client went away while sending")


@contextlib.asynccontextmanager
async def stopping(runtime: SessionRuntime) -> AsyncIterator[SessionRuntime]:
    """Stop an ephemeral ``runtime`` and wait for its pipeline when the block ends."""
    try:
        yield runtime
    finally:
        runtime.stop()
        await runtime.stopped()
