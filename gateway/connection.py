"""One WebSocket connection: a reader and a writer task around a bounded send queue.

The reader decodes frames with the connection's codec and feeds the session
runtime; the writer sends events in order, and a heartbeat data frame whenever
nothing was sent for a while (proxies and load balancers cut sockets that look
idle, and they ignore WebSocket control frames). A client that stops reading
fills the queue; the connection is then closed with ``4008`` instead of growing
memory without bound, and the session stays resumable. A resume replay is not
pushed through that bound: the writer streams it from the replay log, at the
pace the socket takes it, so every replay the log can serve is served.

The connection's life is one :class:`~gateway.lifecycle.ConnectionState`
(open, closing, closed); closing never raises, however full the queue is.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.core.codes import CloseCode, ErrorCode
from gateway.core.events import ClientEvent, ServerEvent
from gateway.core.limits import TokenBucket
from gateway.core.replay import LoggedEvent
from gateway.core.wire import WireError
from gateway.flag import Flag
from gateway.lifecycle import CONNECTION_TRANSITIONS, ConnectionState, Lifecycle
from gateway.metrics import GatewayMetrics
from gateway.runtime import ClientSink

log = logging.getLogger("gateway.connection")


@dataclass(frozen=True, slots=True)
class Reply:
    """A frame a codec answers by itself, outside the session (a keep-alive echo)."""

    text: str


@dataclass(frozen=True, slots=True)
class Later:
    """Frames a codec sends in order, ``now`` at once and ``then`` after ``delay_s``
    (Twilio's ``end`` once the goodbye was spoken). The writer waits: frames
    queued after it go out after it."""

    now: tuple[str, ...]
    then: str
    delay_s: float


class Codec(Protocol):
    """A wire protocol: frames in, events out, and back. One per connection, so a
    codec may keep state (a platform's response ids, say)."""

    def decode(
        self, frame: str | bytes
    ) -> ClientEvent | tuple[ClientEvent, ...] | WireError | Reply | None:
        """One frame from the client: an event (or events, in order) for the session,
        an error, a direct reply, or ``None`` when the frame needs nothing."""
        ...

    def encode(self, frame: LoggedEvent, event: ServerEvent | None) -> str | Later | None:
        """One server event as a text frame (or frames, :class:`Later`), or ``None``
        to send nothing."""
        ...

    def heartbeat(self, session_id: str, seq: int) -> str | None:
        """A keep-alive data frame, or ``None`` if the protocol has none."""
        ...


class _Named(Protocol):
    @property
    def id(self) -> str: ...


class SessionPort(Protocol):
    """What a connection feeds: a :class:`~gateway.runtime.SessionRuntime`, or a
    :class:`~gateway.relay.Relay` to the instance that runs the session."""

    @property
    def session(self) -> _Named: ...

    def receive(self, event: ClientEvent) -> None: ...

    def reject(self, code: ErrorCode, message: str) -> None: ...

    def close_client(self, code: int, reason: str) -> None: ...

    def detach(self, client: ClientSink) -> None: ...


@dataclass(frozen=True, slots=True)
class InputLimits:
    """What a client may send: frames per second (a token bucket), and how long it
    may stay silent. Going over the rate drops frames with one ``rate_limited``
    error per second; only a flood of ``flood_factor`` bursts within a second
    closes the connection (1008)."""

    rate_per_s: float = 10.0
    burst: int = 30
    flood_factor: int = 3
    idle_timeout_s: float = 900.0


@dataclass(frozen=True, slots=True)
class _CloseRequest:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Replay:
    frames: Sequence[LoggedEvent]


@dataclass(frozen=True, slots=True)
class _Preface:
    texts: Sequence[str]


_Item = str | Later | _Replay | _Preface | _CloseRequest


class Connection:
    """Serves one accepted WebSocket for one session runtime."""

    def __init__(
        self,
        websocket: WebSocket,
        codec: Codec,
        *,
        queue_size: int,
        heartbeat_s: float,
        limits: InputLimits | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._ws = websocket
        self._codec = codec
        self._session_id = ""
        self._bound = queue_size
        #: What waits to be sent; ``None`` while nothing does (an empty deque is 760 bytes).
        self._out: deque[_Item] | None = None
        self._queued = 0  # live frames in ``_out`` (the preface and replays are not counted)
        self._ready = Flag()
        self._heartbeat_s = heartbeat_s
        self._limits = limits or InputLimits()
        self._life: Lifecycle[ConnectionState] = Lifecycle(
            "connection", ConnectionState.OPEN, CONNECTION_TRANSITIONS
        )
        self._last_seq = 0
        self.close_code: int | None = None
        self._metrics = metrics

    @property
    def state(self) -> ConnectionState:
        return self._life.state

    def _enter(self, new: ConnectionState) -> None:
        if self._life.state is not new:
            self._life.move(new)

    # --- ClientSink --------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._life.state is not ConnectionState.OPEN

    def deliver(self, frame: LoggedEvent, event: ServerEvent | None = None) -> None:
        """Queue an event; on overflow, give up on this client (it can resume)."""
        if self.closed:
            return
        try:
            text = self._codec.encode(frame, event)
        except Exception:  # an adapter bug costs this connection, never the session
            log.exception("encoding an event failed session=%s seq=%s", self._session_id, frame.seq)
            self.abort(CloseCode.INTERNAL_ERROR, "internal error; resume to continue")
            return
        if text is None:
            return
        if self._queued >= self._bound:
            log.warning("send queue full session=%s: closing slow client", self._session_id)
            self.abort(CloseCode.SLOW_CONSUMER, "client too slow to read")
            return
        self._put(text)
        self._queued += 1
        self._last_seq = frame.seq
        if self._metrics is not None:
            self._metrics.send_queue_depth.observe(self._queued)

    def replay(self, frames: Sequence[LoggedEvent]) -> None:
        """Queue a resume replay: streamed by the writer, outside the queue's bound."""
        if not self.closed and frames:
            self._put(_Replay(frames))
            self._last_seq = frames[-1].seq

    def prepend(self, texts: Sequence[str]) -> None:
        """Frames the protocol expects before any session event (Retell's opening)."""
        if texts:
            if self._out is None:
                self._out = deque()
            self._out.appendleft(_Preface(tuple(texts)))
            self._ready.set()

    def _put(self, item: _Item) -> None:
        if self._out is None:
            self._out = deque()
        self._out.append(item)
        self._ready.set()

    def _send_direct(self, text: str) -> None:
        if self.closed:
            return
        if self._queued >= self._bound:
            self.abort(CloseCode.SLOW_CONSUMER, "client too slow to read")
            return
        self._put(text)
        self._queued += 1

    def close(self, code: int, reason: str) -> None:
        """Close after everything queued so far is sent. Never raises."""
        if self.closed:
            return
        self._enter(ConnectionState.CLOSING)
        self._put(_CloseRequest(code, reason))

    def abort(self, code: int, reason: str) -> None:
        """Close now: whatever is still queued is dropped. Never raises."""
        if self.closed:
            return
        self._out = None
        self._queued = 0
        self.close(code, reason)

    # --- tasks -------------------------------------------------------------------

    async def serve(self, runtime: SessionPort) -> None:
        """Run until the client disconnects or the connection is closed; the
        connection must already be attached to ``runtime``."""
        self._session_id = runtime.session.id
        try:
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(self._read(runtime), name="ws-reader")
                writer = tg.create_task(self._write(), name="ws-writer")
                reader.add_done_callback(lambda _: writer.cancel())
                writer.add_done_callback(lambda _: reader.cancel())
        finally:
            self._enter(ConnectionState.CLOSED)
            runtime.detach(self)

    async def _read(self, runtime: SessionPort) -> None:
        limits = self._limits
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(limits.rate_per_s, limits.burst)
        window, dropped = 0.0, 0
        idle: float | None = limits.idle_timeout_s
        while True:
            try:
                async with asyncio.timeout(idle):
                    message = await self._ws.receive()
            except TimeoutError:
                runtime.close_client(CloseCode.IDLE_TIMEOUT, f"nothing received for {idle:g} s")
                idle = None  # keep reading until the close handshake is done
                continue
            if message["type"] == "websocket.disconnect":
                if self.close_code is None:
                    self.close_code = message.get("code", CloseCode.NORMAL)
                return
            if self.closed or idle is None:
                continue  # closing: read until the handshake is done, act on nothing
            now = loop.time()
            if not bucket.take(now):
                if now - window >= 1.0:
                    window, dropped = now, 0
                dropped += 1
                if dropped == 1:
                    runtime.reject(
                        ErrorCode.RATE_LIMITED,
                        f"too many messages: at most {limits.rate_per_s:g} per second "
                        f"(bursts of {limits.burst}); this one was dropped",
                    )
                elif dropped > limits.burst * limits.flood_factor:
                    log.warning("flood from client session=%s: closing", self._session_id)
                    runtime.close_client(CloseCode.POLICY_VIOLATION, "too many messages")
                    idle = None
                continue
            text: str | None = message.get("text")
            frame: str | bytes = text if text is not None else message.get("bytes") or b""
            try:
                result = self._codec.decode(frame)
            except Exception:  # an adapter bug costs this frame, never the session
                log.exception("decoding a frame failed session=%s", self._session_id)
                runtime.reject(ErrorCode.INTERNAL_ERROR, "the gateway could not read this frame")
                continue
            if result is None:
                continue
            if isinstance(result, WireError):
                runtime.reject(result.code, result.message)
            elif isinstance(result, Reply):
                self._send_direct(result.text)
            elif isinstance(result, tuple):
                for event in result:
                    runtime.receive(event)
            else:
                runtime.receive(result)

    async def _next(self) -> _Item | None:
        """The next item to send, or ``None`` after ``heartbeat_s`` of nothing."""
        while not self._out:
            self._ready.clear()
            try:
                async with asyncio.timeout(self._heartbeat_s):
                    await self._ready.wait()
            except TimeoutError:
                return None
        item = self._out.popleft()
        if not self._out:
            self._out = None
        if isinstance(item, str):
            self._queued -= 1
        return item

    async def _write(self) -> None:
        while True:
            item = await self._next()
            if item is None:
                beat = self._codec.heartbeat(self._session_id, self._last_seq)
                if beat is None:
                    continue
                item = beat
            if isinstance(item, _CloseRequest):
                self.close_code = item.code
                try:
                    await self._ws.close(item.code, item.reason)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    log.debug("client was gone before the close frame")
                return
            try:
                if isinstance(item, _Replay):
                    for frame in item.frames:
                        text = self._codec.encode(frame, None)
                        if isinstance(text, str):
                            await self._ws.send_text(text)
                elif isinstance(item, _Preface):
                    for text in item.texts:
                        await self._ws.send_text(text)
                elif isinstance(item, Later):
                    for text in item.now:
                        await self._ws.send_text(text)
                    await asyncio.sleep(item.delay_s)
                    await self._ws.send_text(item.then)
                else:
                    await self._ws.send_text(item)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return  # the reader sees the disconnect
