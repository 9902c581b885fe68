"""One WebSocket connection: a writer task around a bounded send queue, and the reader
on the connection's own task.

The reader decodes frames with the connection's codec and feeds the session
runtime; the writer sends events in order, and a heartbeat data frame whenever
nothing was sent for a while (proxies and load balancers cut sockets that look
idle, and they ignore WebSocket control frames). A client that stops reading
fills the queue; the connection is then closed with ``4008`` instead of growing
memory without bound, and the session stays resumable. A resume replay is not
pushed through that bound: the writer streams it from the replay log, at the
pace the socket takes it, so every replay the log can serve is served.

The idle limit and the heartbeat hang on one timer per connection, moved lazily
(a frame only notes when it came): an idle socket holds one timer handle rather
than a timeout context per pending read and write, and a frame costs no timer
at all. The reader runs on the serving task and the writer on a task of its own,
which stops the reader when it ends: one task (and no task group) per socket.

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


#: How early the timer may fire and still count (the loop's clock is not exact).
_SLACK_S = 0.001


class Connection:
    """Serves one accepted WebSocket for one session runtime."""

    __slots__ = (
        "_beat",
        "_bound",
        "_codec",
        "_deaf",
        "_heartbeat_s",
        "_last_in",
        "_last_seq",
        "_life",
        "_limits",
        "_loop",
        "_metrics",
        "_out",
        "_port",
        "_queued",
        "_ready",
        "_reading",
        "_session_id",
        "_timer",
        "_waiting_since",
        "_ws",
        "close_code",
    )

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
        # Set by serve(): the loop, the runtime fed, the serving task while it reads.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port: SessionPort | None = None
        self._reading: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_in = 0.0  # when the last frame came (the loop's clock)
        self._waiting_since: float | None = None  # the writer waits for something to send
        self._beat = False  # a heartbeat is due
        self._deaf = False  # closing for idleness or a flood: frames are read, not acted on

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
        connection must already be attached to ``runtime``. An exception of the
        writer is raised here, as one of the reader is."""
        self._session_id = runtime.session.id
        self._port = runtime
        loop = self._loop = asyncio.get_running_loop()
        self._last_in = loop.time()
        self._arm()
        reading = self._reading = asyncio.current_task()
        writer = loop.create_task(self._write(), name="ws-writer")
        writer.add_done_callback(self._writer_done)
        try:
            await self._read(runtime)
        except asyncio.CancelledError:
            # Stopped by the writer's end (it let go of ``_reading``), or cancelled.
            if self._reading is not None or reading is None or reading.uncancel() > 0:
                raise
            failure = None if writer.cancelled() else writer.exception()
            if failure is not None:
                raise failure from None
        finally:
            self._reading = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            writer.cancel()
            try:
                await asyncio.wait((writer,))
            finally:
                self._enter(ConnectionState.CLOSED)
                runtime.detach(self)

    def _writer_done(self, writer: asyncio.Task[None]) -> None:
        """The writer ended (the close was sent, the client is gone, or it failed):
        the reader, if it still reads, stops too."""
        failure = None if writer.cancelled() else writer.exception()
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.cancel()  # serve() raises the failure
        elif failure is not None:
            log.error("the writer failed session=%s", self._session_id, exc_info=failure)

    def _arm(self) -> None:
        """Schedule the next check of the idle limit and the heartbeat."""
        loop = self._loop
        assert loop is not None
        since = self._waiting_since
        due = (loop.time() if since is None or self._beat else since) + self._heartbeat_s
        if not self._deaf:
            due = min(due, self._last_in + self._limits.idle_timeout_s)
        self._timer = loop.call_at(due, self._tick)

    def _tick(self) -> None:
        port = self._port
        assert self._loop is not None
        assert port is not None
        self._timer = None
        now = self._loop.time() + _SLACK_S
        idle_s = self._limits.idle_timeout_s
        if not self._deaf and now - self._last_in >= idle_s:
            self._deaf = True  # keep reading until the close handshake is done
            port.close_client(CloseCode.IDLE_TIMEOUT, f"nothing received for {idle_s:g} s")
        since = self._waiting_since
        if since is not None and now - since >= self._heartbeat_s:
            self._beat = True
            self._ready.set()
        self._arm()

    async def _read(self, runtime: SessionPort) -> None:
        limits = self._limits
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(limits.rate_per_s, limits.burst)
        window, dropped = 0.0, 0
        receive = self._ws.receive
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                if self.close_code is None:
                    self.close_code = message.get("code", CloseCode.NORMAL)
                return
            now = self._last_in = loop.time()
            if self.closed or self._deaf:
                continue  # closing: read until the handshake is done, act on nothing
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
                    self._deaf = True
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
        """The next item to send, or ``None`` after ``heartbeat_s`` of nothing (the
        timer says when)."""
        loop = self._loop
        assert loop is not None
        while not self._out:
            if self._beat:
                self._beat = False
                return None
            self._ready.clear()
            self._waiting_since = loop.time()
            try:
                await self._ready.wait()
            finally:
                self._waiting_since = None
        self._beat = False
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
