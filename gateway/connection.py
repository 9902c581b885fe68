"""One WebSocket connection: a reader and a writer task around a bounded send queue.

The reader decodes frames with the connection's codec and feeds the session
runtime; the writer sends encoded events in order. A client that stops reading
fills the queue; the connection is then closed with ``4008`` instead of growing
memory without bound (the session keeps every event in its replay log).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.core.codes import CloseCode
from gateway.core.events import ClientEvent, ServerEvent
from gateway.core.wire import WireError
from gateway.runtime import SessionRuntime

log = logging.getLogger("gateway.connection")


class Codec(Protocol):
    """A wire protocol: frames in, events out, and back."""

    def decode(self, frame: str | bytes) -> ClientEvent | WireError:
        """One frame from the client, as an event or an error."""
        ...

    def encode(self, event: ServerEvent) -> str | None:
        """One server event as a text frame, or ``None`` to send nothing."""
        ...


@dataclass(frozen=True, slots=True)
class _CloseRequest:
    code: int
    reason: str


class Connection:
    """Serves one accepted WebSocket for one session runtime."""

    def __init__(self, websocket: WebSocket, codec: Codec, *, queue_size: int) -> None:
        self._ws = websocket
        self._codec = codec
        self._queue: asyncio.Queue[str | _CloseRequest] = asyncio.Queue(queue_size)
        self._closing = False
        self.close_code: int | None = None

    # --- ClientSink --------------------------------------------------------------

    def deliver(self, event: ServerEvent) -> None:
        """Queue an event; on overflow, give up on this client (it can resume)."""
        if self._closing:
            return
        frame = self._codec.encode(event)
        if frame is None:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("send queue full session=%s: closing slow client", event.session_id)
            self._drain()
            self.close(CloseCode.SLOW_CONSUMER, "client too slow to read")

    def close(self, code: int, reason: str) -> None:
        """Close after everything queued so far is sent."""
        if self._closing:
            return
        self._closing = True
        self._queue.put_nowait(_CloseRequest(code, reason))

    # --- tasks -------------------------------------------------------------------

    async def serve(self, runtime: SessionRuntime) -> None:
        """Run until the client disconnects or the session closes the connection."""
        runtime.attach(self)
        try:
            runtime.open()
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(self._read(runtime), name="ws-reader")
                writer = tg.create_task(self._write(), name="ws-writer")
                reader.add_done_callback(lambda _: writer.cancel())
                writer.add_done_callback(lambda _: reader.cancel())
        finally:
            runtime.detach(self)

    async def _read(self, runtime: SessionRuntime) -> None:
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                self.close_code = message.get("code", CloseCode.NORMAL)
                return
            text: str | None = message.get("text")
            frame: str | bytes = text if text is not None else message.get("bytes") or b""
            result = self._codec.decode(frame)
            if isinstance(result, WireError):
                runtime.reject(result.code, result.message)
            else:
                runtime.receive(result)

    async def _write(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, _CloseRequest):
                self.close_code = item.code
                try:
                    await self._ws.close(item.code, item.reason)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    log.debug("client was gone before the close frame")
                return
            try:
                await self._ws.send_text(item)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return  # the reader sees the disconnect

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
