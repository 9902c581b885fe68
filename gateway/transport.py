"""Connection hygiene below the ASGI app: uvicorn protocol classes with the limits
uvicorn does not have.

uvicorn (httptools and websockets-sansio) offers ``timeout_keep_alive``,
``limit_concurrency`` (a 503 for HTTP requests only, never for WebSocket
upgrades or for sockets that have not sent a request yet) and ``ws_max_size``.
It has no request-header timeout (a client trickling one byte every few seconds
holds its socket for ever), no limit on the total size of request headers, and
its websockets-sansio layer never writes the 431 that ``websockets`` prepares
for an over-long header line, nor closes without a traceback on invalid UTF-8.
What is added here, and why here (each needs the socket, which no ASGI
middleware sees):

- **Header timeout** (``GATEWAY_HEADER_TIMEOUT_S``): a request's headers must be
  complete within it, or the socket is closed (408 if a request had begun).
- **431** for request headers over ``GATEWAY_MAX_HEADER_BYTES`` (the request
  line included), and for an upgrade line over the ``websockets`` line limit.
- **Socket cap** (``GATEWAY_MAX_SOCKETS``, lowered to fit ``RLIMIT_NOFILE``
  minus ``GATEWAY_FD_RESERVE``): every socket counts, HTTP, WebSocket and
  half-open alike. At the cap a new socket evicts the oldest one still waiting
  for its headers (a slow or idle one); if there is none, it may only ask for
  ``/health`` or ``/ready`` (up to half the reserve of such sockets), else it gets
  503. So the probes always answer and the process never runs out of file
  descriptors.
- **Bytes in per second** (``GATEWAY_MAX_IN_BYTES_PER_S``) per WebSocket:
  past it the last read is held back and the socket is not read for a while
  (TCP pushes back on the sender); nothing is dropped and nothing grows.
- **Invalid UTF-8** in a text frame: close 1007, one INFO line, no traceback.

And what an idle WebSocket costs: uvicorn's receive queue (an ``asyncio.Queue``,
four deques) and write gate (an ``asyncio.Event``) become a list and a
:class:`~gateway.flag.Flag`, and the upgrade request's and the 101 response's
headers are dropped once the handshake is done (the ASGI scope keeps its own
copy): about 7 KiB a socket.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gateway.core.limits import TokenBucket
from gateway.flag import Flag

log = logging.getLogger("gateway.transport")

#: Paths answered even past the socket cap (kept in step with gateway.hosts).
PROBE_PATHS = frozenset({b"/health", b"/ready"})

_RESPONSES = {
    408: b"HTTP/1.1 408 Request Timeout\r\n",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
    503: b"HTTP/1.1 503 Service Unavailable\r\n",
}


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """What one socket may hold and how fast it must speak."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 16384
    max_sockets: int = 2048
    #: Sockets past ``max_sockets`` that may still ask for ``/health`` or ``/ready``.
    probe_slots: int = 32
    max_in_bytes_per_s: int = 262_144


def socket_cap(max_sockets: int, fd_reserve: int) -> int:
    """``max_sockets``, lowered so that sockets plus the reserve fit the soft
    ``RLIMIT_NOFILE`` (the store, logs, provider connections and the probes use
    the reserve)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_sockets
    return max(1, min(max_sockets, soft - fd_reserve))


def _plain(status: int, text: str) -> bytes:
    body = text.encode()
    return b"".join(
        [
            _RESPONSES[status],
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class _HeadersTooLarge(Exception):
    """Raised in a parser callback to stop parsing an oversized request."""


class _Refused(Exception):
    """Raised in a parser callback once the request was answered and the socket closed."""


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a header size limit and
    the socket cap. Subclassed per app by :func:`protocol_classes`."""

    limits: ClassVar[TransportLimits] = TransportLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._too_large = False
        self._begun = False  # a request has started on this socket
        self._header_timer: asyncio.TimerHandle | None = None
        #: Accepted past the cap: only the probes are answered.
        self._probe_only = False
        #: When this socket began waiting for a request's headers; ``None`` while
        #: one is being served. Sockets that wait are the ones evicted at the cap.
        self.waiting_since: float | None = None

    # --- socket cap --------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()
        open_sockets = len(self.connections)
        if open_sockets <= self.limits.max_sockets or self._evict_one():
            return
        if open_sockets <= self.limits.max_sockets + self.limits.probe_slots:
            self._probe_only = True
            return
        log.warning("socket cap of %d reached: connection refused", self.limits.max_sockets)
        self._refuse(503, "The gateway has too many open connections; try again later.")

    def _evict_one(self) -> bool:
        """Close the socket that has waited longest for its headers (not this one)."""
        waiting = [
            p
            for p in self.connections
            if isinstance(p, GatewayHttpProtocol) and p is not self and p.waiting_since is not None
        ]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda p: p.waiting_since or 0.0)
        oldest._close_quietly()
        return True

    # --- header timeout and size -------------------------------------------------

    def _wait_for_headers(self) -> None:
        self.waiting_since = self.loop.time()
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._headers_timed_out
            )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.waiting_since is None or self.transport.is_closing():
            return
        if self._begun:
            log.info("request headers not complete in %g s: closed", self.limits.header_timeout_s)
            self._refuse(408, "The request headers did not arrive in time.")
        else:
            self._close_quietly()

    def _close_quietly(self) -> None:
        self.waiting_since = None
        self._stop_header_timer()
        self.transport.close()

    def _refuse(self, status: int, text: str) -> None:
        self.waiting_since = None
        self._stop_header_timer()
        if not self.transport.is_closing():
            self.transport.write(_plain(status, text))
            self.transport.close()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            self._too_large = True
            raise _HeadersTooLarge

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes, self._too_large, self._begun = 0, False, True
        self._wait_for_headers()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.waiting_since = None
        self._stop_header_timer()
        if self._probe_only and httptools.parse_url(self.url).path not in PROBE_PATHS:
            self._refuse(503, "The gateway has too many open connections; try again later.")
            raise _Refused
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, except that a request stopped by our own
        # callbacks (oversized, or refused past the cap) is answered as such
        # instead of with a 400 and a warning.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._too_large:
                log.info("request headers over %d bytes: 431", self.limits.max_header_bytes)
                self._refuse(431, "The request headers are too large.")
            elif not self.transport.is_closing():
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.waiting_since = self.loop.time()  # idle keep-alive: evictable

    def connection_lost(self, exc: Exception | None) -> None:
        self.waiting_since = None
        self._stop_header_timer()
        super().connection_lost(exc)


class _Inbox:
    """What uvicorn's WebSocket protocol uses of its ``asyncio.Queue`` (``put_nowait``,
    ``get``, ``empty``), without the queue's four deques: it rarely holds more than
    one message, since reading pauses until the app took the last one."""

    __slots__ = ("_items", "_ready")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._ready = Flag()

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._ready.set()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> Any:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.pop(0)


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with a byte budget in, the 431 that
    ``websockets`` prepares, a quiet 1007 for invalid UTF-8, and a denial response
    (HTTP 401/403 before accept) counted as a finished handshake: stock uvicorn
    logs "ASGI callable returned without completing handshake." at ERROR after
    every one, though the client got its answer (Kludex/uvicorn PR #3138)."""

    limits: ClassVar[TransportLimits] = TransportLimits()

    # Every attribute uvicorn's protocol sets (0.54), and ours, in slots: the 41 are
    # past CPython's limit for a key-sharing instance dict, so as a dict they cost
    # about 1.6 KiB a socket, in slots 0.4. An attribute missing here still works
    # (it goes into the instance's dict); tests/server/test_transport.py fails then.
    __slots__ = (
        *("app", "app_state", "asgi_version", "client", "close_sent", "close_timeout"),
        *("close_timer", "config", "conn", "connections", "curr_msg_data_type"),
        *("default_headers", "disconnected", "frames", "handshake_complete"),
        *("handshake_initiated", "initial_response", "last_ping_rtt", "logger", "loop"),
        *("pending_ping_payload", "ping_interval", "ping_sent_at", "ping_timeout"),
        *("ping_timer", "pong_timer", "queue", "read_paused", "request", "response"),
        *("root_path", "scheme", "scope", "server", "tasks", "transport", "writable"),
        *("_bytes_in", "_throttled", "_held", "_throttle_timer"),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]  # the calls uvicorn makes of it
        self.writable = Flag(True)  # type: ignore[assignment]  # set, clear, wait
        rate = float(self.limits.max_in_bytes_per_s)
        self._bytes_in = TokenBucket(rate, int(rate))
        self._throttled = False
        self._held: list[bytes] = []
        self._throttle_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if not self.handshake_initiated:
            self.conn.receive_data(data)
            if self.conn.handshake_exc is not None:
                # websockets refused the upgrade request (a header line over its
                # limit: 431/414, or not HTTP at all) and queued its answer; uvicorn
                # does not write it, so the client would wait for ever.
                log.info("WebSocket upgrade refused: %s", self.conn.handshake_exc)
                self.transport.write(b"".join(self.conn.data_to_send()))
                self.handshake_initiated = self.handshake_complete = self.close_sent = True
                self.transport.close()
                return
            self.handle_events()
            return
        if self._held:
            self._held.append(data)  # read in the same loop turn as the pause
            self._bytes_in.debit(len(data), self.loop.time())
            return
        delay = self._bytes_in.debit(len(data), self.loop.time())
        if delay > 0 and not self.transport.is_closing():
            # Over budget: hold this read back and stop reading until the budget
            # allows it (at most one read of the socket is ever held).
            self._held.append(data)
            self._throttled = True
            self.transport.pause_reading()
            self._throttle_timer = self.loop.call_later(delay, self._release)
            return
        super().data_received(data)

    async def send(self, message: Any) -> None:
        await super().send(message)
        kind = message["type"]
        if kind == "websocket.accept" and self.handshake_complete:
            # Only the handshake read these; websockets' parser keeps the request.
            self.request.headers.clear()
            self.response.headers.clear()
        elif kind == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True  # the denial is the whole answer: nothing is owed

    def _release(self) -> None:
        self._throttle_timer = None
        delay = self._bytes_in.debit(0, self.loop.time())
        if delay > 0:
            self._throttle_timer = self.loop.call_later(delay, self._release)
            return
        held, self._held = b"".join(self._held), []
        self._throttled = False
        super().data_received(held)
        if not self.read_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    async def receive(self) -> Any:
        # uvicorn's receive(), except that a throttled socket stays paused.
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if not self._throttled:
                self.transport.resume_reading()
        return message

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            try:
                data.decode()
            except UnicodeDecodeError:
                # uvicorn logs this with a traceback at ERROR; it is the client's fault.
                log.info("text frame with invalid UTF-8: closing with 1007")
                self.frames = []
                self.conn.send_close(1007, "invalid UTF-8")
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._throttle_timer is not None:
            self._throttle_timer.cancel()
            self._throttle_timer = None
        super().connection_lost(exc)


def protocol_classes(
    limits: TransportLimits,
) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """The HTTP and WebSocket protocol classes for uvicorn's ``http`` and ``ws``
    options, carrying ``limits``."""
    http = type("GatewayHttp", (GatewayHttpProtocol,), {"limits": limits})
    ws = type("GatewayWebSocket", (GatewayWebSocketProtocol,), {"limits": limits})
    return http, ws
