"""A connection's reader (on the serving task), its writer task and its one timer:
the writer's end or failure ends the connection, a cancel reaches both, and the
timer sends heartbeats and enforces the idle limit."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from gateway.app import NativeCodec
from gateway.connection import Connection, InputLimits
from gateway.core.codes import CloseCode
from gateway.core.replay import LoggedEvent
from gateway.lifecycle import ConnectionState
from tests.support.faults import wait_until


class Socket:
    """Just enough of a Starlette WebSocket: frames in through ``feed``, frames out in
    ``sent``; ``fail_sends`` makes every send raise an unexpected error."""

    def __init__(self, *, fail_sends: bool = False) -> None:
        self.sent: list[str] = []
        self.closed_with: tuple[int, str | None] | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._fail = fail_sends

    def feed(self, text: str) -> None:
        self._inbox.put_nowait({"type": "websocket.receive", "text": text})

    async def receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    async def send_text(self, text: str) -> None:
        if self._fail:
            raise ValueError("a bug in the writer's path")
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = (code, reason)
        self._inbox.put_nowait({"type": "websocket.disconnect", "code": code})


class Runtime:
    def __init__(self) -> None:
        self.session = SimpleNamespace(id="s_tasks")
        self.detached: list[Any] = []
        self.received: list[Any] = []
        self.closes: list[int] = []

    def detach(self, client: Any) -> None:
        self.detached.append(client)

    def receive(self, event: Any) -> None:
        self.received.append(event)

    def reject(self, code: Any, message: str) -> None: ...

    def close_client(self, code: int, reason: str) -> None:
        self.closes.append(code)


def frame(seq: int) -> LoggedEvent:
    data = orjson.dumps({"type": "response.tts", "seq": seq, "turn_id": "t1"}).decode()
    return LoggedEvent(seq, "response.tts", "t1", data)


def connection(ws: Socket, **kwargs: Any) -> Connection:
    return Connection(ws, NativeCodec(65536), queue_size=8, **kwargs)  # type: ignore[arg-type]


def writers() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "ws-writer"]


async def test_a_writer_that_fails_ends_the_connection_with_its_error() -> None:
    ws, runtime = Socket(fail_sends=True), Runtime()
    conn = connection(ws, heartbeat_s=30)
    conn.deliver(frame(1))
    serving = asyncio.create_task(conn.serve(runtime))  # type: ignore[arg-type]
    await asyncio.wait((serving,), timeout=5)  # the reader must not wait on for a frame
    if not serving.done():
        serving.cancel()
        pytest.fail("the connection outlived its writer's failure")
    with pytest.raises(ValueError, match="writer"):
        await serving
    assert conn.state is ConnectionState.CLOSED
    assert runtime.detached == [conn]
    assert writers() == []


async def test_cancelling_the_connection_stops_its_writer_and_detaches() -> None:
    ws, runtime = Socket(), Runtime()
    conn = connection(ws, heartbeat_s=30)
    serving = asyncio.create_task(conn.serve(runtime))  # type: ignore[arg-type]
    ws.feed('{"type": "ping"}')
    await wait_until(lambda: bool(runtime.received))
    assert len(writers()) == 1
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert writers() == []
    assert runtime.detached == [conn]


async def test_a_close_ends_the_writer_and_then_the_reader() -> None:
    ws, runtime = Socket(), Runtime()
    conn = connection(ws, heartbeat_s=30)
    conn.deliver(frame(1))
    conn.close(1000, "bye")
    async with asyncio.timeout(5):
        await conn.serve(runtime)  # type: ignore[arg-type]
    assert ws.sent == [frame(1).data]
    assert ws.closed_with == (1000, "bye")
    assert writers() == []


async def test_a_quiet_connection_gets_heartbeats_from_its_timer() -> None:
    ws, runtime = Socket(), Runtime()
    conn = connection(ws, heartbeat_s=0.1)
    serving = asyncio.create_task(conn.serve(runtime))  # type: ignore[arg-type]
    try:
        await wait_until(lambda: len(ws.sent) >= 3)
    finally:
        conn.close(1000, "done")
        await serving
    beats = [orjson.loads(text) for text in ws.sent[:3]]
    assert all(beat["type"] == "heartbeat" for beat in beats), beats


async def test_the_idle_limit_counts_from_the_last_frame_received() -> None:
    ws, runtime = Socket(), Runtime()
    conn = connection(ws, heartbeat_s=30, limits=InputLimits(idle_timeout_s=1.0))
    serving = asyncio.create_task(conn.serve(runtime))  # type: ignore[arg-type]
    try:
        for _ in range(20):  # two seconds of frames, each well within the limit
            ws.feed('{"type": "ping"}')
            await asyncio.sleep(0.1)
        assert runtime.closes == []
        await wait_until(lambda: bool(runtime.closes))
        assert runtime.closes == [CloseCode.IDLE_TIMEOUT]
    finally:
        conn.close(1000, "done")
        await serving
