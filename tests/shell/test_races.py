"""Lifecycle races of the session shell, each pinned: a resume or takeover during a
commit keeps the full grace window; attaching to a stopped runtime is refused and
a keyed attach reopens afresh; closing a connection on an exactly full queue
never raises; delete and sweep serialise with a resume's restore."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest

from gateway.app import NativeCodec
from gateway.connection import Connection
from gateway.core.events import ServerEvent, UserMessage
from gateway.core.replay import LoggedEvent
from gateway.core.session import SessionConfig
from gateway.errors import ResumeRefused, RuntimeStopped
from gateway.lifecycle import ConnectionState, RuntimeState
from gateway.providers.offline import OfflineProvider
from gateway.runtime import SessionRuntime
from gateway.sessions import ManagerConfig, SessionManager
from gateway.stores.memory import MemoryStore
from tests.support.client import Client
from tests.support.faults import (
    FaultyFactory,
    FaultyProvider,
    FlakyStore,
    Reader,
    check_view,
    faulty_gateways,
    merge_views,
    resume_url,
    wait_until,
)

GRACE_S = 3.0


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[FaultyFactory]:
    with faulty_gateways(tmp_path) as start:
        yield start


async def is_live(http: httpx.AsyncClient, session_id: str) -> bool:
    response = await http.get(f"/sessions/{session_id}")
    assert response.status_code == 200
    live: bool = response.json()["live"]
    return live


# --- (a) a resume during a commit keeps the whole grace window ----------------------


async def test_after_a_takeover_and_a_resume_during_commits_the_runtime_lives_its_grace(
    gateways: FaultyFactory,
) -> None:
    """A streams; B takes over during a commit (A gets 4409) and drops, which arms
    the grace timer; C resumes during a commit half-way through that window and
    drops. The runtime must then live C's whole window: a timer left from B's
    would stop it less than half a window after C dropped."""
    gateway = gateways(
        provider=FaultyProvider(token_delay_s=0.05),
        store_options={"commit_delay_s": 0.3},
        GATEWAY_RESUME_GRACE_S=GRACE_S,
    )
    store = gateway.store
    a = Reader(await Client.connect(f"{gateway.ws_url}/ws"))
    await a.until(lambda e: e["type"] == "session.ready")
    ready = a.events[0]
    sid = ready["session_id"]
    # 400 sentences, one every 50 ms: the turn streams for the whole test and the
    # store always has a (slow) commit in flight.
    await a.client.send({"type": "user.message", "text": "[long:400] count", "id": "u1"})
    await a.until(lambda e: e["type"] == "response.tts")
    runtime = gateway.live_runtime(sid)
    assert runtime is not None

    async def resume_during_a_commit(last_seq: int) -> Reader:
        await wait_until(lambda: store.in_commit > 0)
        reader = Reader(await Client.connect(resume_url(gateway.ws_url, ready, last_seq)))
        await reader.until(lambda e: e["type"] == "response.tts")
        return reader

    b = await resume_during_a_commit(max(a.seqs()))
    assert await a.wait_closed() == 4409
    await b.stop()  # detached: a grace timer runs from now
    await asyncio.sleep(GRACE_S / 2)
    c = await resume_during_a_commit(max(b.seqs()))
    assert gateway.live_runtime(sid) is runtime, "the runtime stopped before C resumed"
    await c.stop()
    dropped_at = time.monotonic()

    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        for at in (GRACE_S / 2, GRACE_S * 0.8):
            await asyncio.sleep(at - (time.monotonic() - dropped_at))
            assert await is_live(http, sid), f"the runtime stopped {at:g} s into its grace"
        # ... and it does stop once the window is over (generously bounded).
        store.commit_delay_s = 0.0
        while await is_live(http, sid):
            assert time.monotonic() - dropped_at < GRACE_S + 10, "the runtime never stopped"
            await asyncio.sleep(0.1)
    assert time.monotonic() - dropped_at >= GRACE_S * 0.9

    last = max(c.seqs())
    async with await Client.connect(resume_url(gateway.ws_url, ready, last)) as d:
        await d.ready()
        await d.send({"type": "user.message", "text": "Back", "id": "u2"})
        await d.turn("t2")
    turns = check_view(merge_views(a.events, b.events, c.events, d.received))
    end = turns["t1"][-1]
    assert end["seq"] > last, "t1 ended before C dropped"
    assert end["status"] == "interrupted"
    assert f"did not come back within {GRACE_S:g} s" in end["reason"]
    assert turns["t2"][-1]["status"] == "completed"


# --- manager-level: a fake client and a memory store --------------------------------


class Sink:
    """A :class:`~gateway.runtime.ClientSink` that records what it is sent."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def deliver(self, frame: LoggedEvent, event: ServerEvent | None = None) -> None:
        self.frames.append(orjson.loads(frame.data))

    def replay(self, frames: Sequence[LoggedEvent]) -> None:
        self.frames.extend(orjson.loads(f.data) for f in frames)

    def close(self, code: int, reason: str) -> None:
        self.close_code = code

    def abort(self, code: int, reason: str) -> None:
        self.close_code = code

    def types(self) -> list[str]:
        return [f["type"] for f in self.frames]


def manager_on(store: Any, *, clock: Any = time.time) -> SessionManager:
    return SessionManager(
        provider=OfflineProvider(token_delay_s=0),
        store=store,
        config=ManagerConfig(session=SessionConfig(provider="offline", model="echo")),
        clock=clock,
    )


async def test_attaching_to_a_stopping_or_stopped_runtime_raises_runtime_stopped() -> None:
    manager = manager_on(MemoryStore())
    runtime, token = await manager.start(Sink())
    runtime.stop("stopped for the test")
    assert runtime.state is RuntimeState.STOPPING
    with pytest.raises(RuntimeStopped):
        runtime.attach(Sink(), resume_token=token, last_seq=0)
    await runtime.stopped()
    assert runtime.state is RuntimeState.STOPPED
    late = Sink()
    with pytest.raises(RuntimeStopped):
        runtime.attach(late, resume_token=token, last_seq=0)
    assert late.frames == []
    assert manager.live(runtime.session.id) is None
    # The session itself is fine: resuming it restores a fresh runtime.
    again = Sink()
    fresh = await manager.resume(runtime.session.id, token, again, last_seq=0)
    assert fresh is not runtime
    assert fresh.attached
    await manager.shutdown()


async def test_attach_keyed_reopens_a_fresh_runtime_when_it_stops_before_the_attach() -> None:
    manager = manager_on(MemoryStore())
    sink = Sink()
    seen: list[SessionRuntime] = []

    def before(runtime: SessionRuntime) -> None:
        seen.append(runtime)
        if len(seen) == 1:
            runtime.stop("stopped between open_keyed and attach")

    runtime = await manager.attach_keyed("test", "call-1", sink, before=before)
    assert len(seen) == 2
    assert seen[0] is not seen[1]
    assert runtime is seen[1]
    assert seen[0].stopping
    assert runtime.attached
    assert manager.live(runtime.session.id) is runtime
    runtime.receive(UserMessage(text="Hello there", id="u1"))
    await wait_until(lambda: "response.end" in sink.types())
    assert sink.types()[0] == "session.ready"
    assert sink.frames[-1]["status"] == "completed"
    await manager.shutdown()


# --- (c) closing a connection whose queue is exactly full ---------------------------


class FakeWebSocket:
    """Just enough of a Starlette WebSocket for a Connection."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: tuple[int, str | None] | None = None
        self._gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self._gone.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send_text(self, text: str) -> None:
        await asyncio.sleep(0)
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = (code, reason)
        self._gone.set()


class FakeRuntime:
    def __init__(self) -> None:
        self.session = SimpleNamespace(id="s_fake")
        self.detached: list[Any] = []

    def detach(self, client: Any) -> None:
        self.detached.append(client)

    def receive(self, event: Any) -> None: ...

    def reject(self, code: Any, message: str) -> None: ...

    def close_client(self, code: int, reason: str) -> None: ...


def frame(seq: int) -> LoggedEvent:
    data = orjson.dumps({"type": "response.tts", "seq": seq, "turn_id": "t1"}).decode()
    return LoggedEvent(seq, "response.tts", "t1", data)


QUEUE = 8


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_closing_on_an_exactly_full_queue_never_raises_and_sends_the_close_frame(
    how: str,
) -> None:
    ws = FakeWebSocket()
    connection = Connection(ws, NativeCodec(65536), queue_size=QUEUE, heartbeat_s=30)  # type: ignore[arg-type]
    for seq in range(1, QUEUE + 1):
        connection.deliver(frame(seq))
    assert not connection.closed, "a queue of exactly its bound is not an overflow"
    getattr(connection, how)(1000, "bye")  # must not raise
    assert connection.state is ConnectionState.CLOSING
    connection.close(1011, "again")  # a second close is a no-op, never an error
    connection.deliver(frame(QUEUE + 1))  # nothing is queued once closing

    runtime = FakeRuntime()
    async with asyncio.timeout(5):
        await connection.serve(runtime)  # type: ignore[arg-type]
    assert ws.closed_with == (1000, "bye")
    expected = [frame(seq).data for seq in range(1, QUEUE + 1)] if how == "close" else []
    assert ws.sent == expected
    assert connection.state is ConnectionState.CLOSED
    assert runtime.detached == [connection]


async def test_one_more_than_a_full_queue_closes_4008_promptly() -> None:
    ws = FakeWebSocket()
    connection = Connection(ws, NativeCodec(65536), queue_size=QUEUE, heartbeat_s=30)  # type: ignore[arg-type]
    for seq in range(1, QUEUE + 2):
        connection.deliver(frame(seq))
    assert connection.closed
    async with asyncio.timeout(5):
        await connection.serve(FakeRuntime())  # type: ignore[arg-type]
    assert ws.closed_with is not None
    assert ws.closed_with[0] == 4008
    assert ws.sent == []


# --- (d) delete and sweep against a resume's restore --------------------------------


async def race_restore(
    manager: SessionManager,
    store: FlakyStore,
    other: Any,
    *,
    at: str,
) -> tuple[Any, Any, str, Sink]:
    """Resume a stored (not live) session, and run ``other(session_id)`` as soon
    as the restore is inside the store call ``at``; both results."""
    session_id, token, _ = await manager.create()
    sink = Sink()
    before = store.calls[at]
    resume = asyncio.create_task(manager.resume(session_id, token, sink, last_seq=0))
    await wait_until(lambda: store.calls[at] > before, within_s=5)
    racing = asyncio.create_task(other(session_id))
    results = await asyncio.gather(resume, racing, return_exceptions=True)
    return results[0], results[1], session_id, sink


async def no_live_runtime_without_rows(
    manager: SessionManager, store: FlakyStore, session_id: str
) -> None:
    """The invariant: a live runtime always has its rows in the store."""
    await asyncio.sleep(0.05)  # let anything still stopping finish
    runtime = manager.live(session_id)
    rows = await store.inner.get(session_id)
    assert runtime is None or rows is not None, "a live runtime whose store rows are gone"


@pytest.mark.parametrize("at", ["get", "read_events"])
async def test_delete_during_a_restore_leaves_no_live_runtime_without_rows(at: str) -> None:
    store = FlakyStore(MemoryStore(), stale_delays={"get": 0.1, "read_events": 0.1})
    manager = manager_on(store)
    resumed, deleted, sid, sink = await race_restore(manager, store, manager.delete, at=at)
    assert deleted is True
    assert await store.inner.get(sid) is None
    await no_live_runtime_without_rows(manager, store, sid)
    assert manager.live(sid) is None
    if isinstance(resumed, SessionRuntime):
        # The resume won the lock: the delete then ended it, and its client knows.
        assert sink.types()[0] == "session.ready"
        assert sink.types()[-1] == "session.ended"
        assert sink.close_code == 1000
        assert resumed.state is RuntimeState.STOPPED
    else:
        assert isinstance(resumed, ResumeRefused)
        assert resumed.code == 4404
    await manager.shutdown()


@pytest.mark.parametrize("at", ["get", "read_events"])
async def test_a_sweep_during_a_restore_leaves_no_live_runtime_without_rows(at: str) -> None:
    now = [1000.0]
    store = FlakyStore(MemoryStore(), stale_delays={"get": 0.1, "read_events": 0.1})
    manager = manager_on(store, clock=lambda: now[0])

    async def sweep(session_id: str) -> list[str]:
        now[0] += 100.0  # everything is idle for 100 s now
        return await manager.sweep(ttl_s=10)

    resumed, expired, sid, sink = await race_restore(manager, store, sweep, at=at)
    assert not isinstance(expired, BaseException), expired
    await no_live_runtime_without_rows(manager, store, sid)
    if sid in expired:
        assert manager.live(sid) is None
        if isinstance(resumed, SessionRuntime):
            assert sink.types()[-1] == "session.ended"
            assert sink.close_code == 1000
        else:
            assert isinstance(resumed, ResumeRefused)
            assert resumed.code == 4404
    else:
        # The restore touched it first: it is fresh, kept, and live.
        assert isinstance(resumed, SessionRuntime)
        assert await store.inner.get(sid) is not None
    await manager.shutdown()


# --- a resume that arrives while the runtime is stopping ----------------------------


async def test_a_resume_while_the_runtime_is_stopping_waits_for_it_and_restores_afresh(
    gateways: FaultyFactory,
) -> None:
    gateway = gateways(provider=FaultyProvider(), GATEWAY_RESUME_GRACE_S=0.3)
    store = gateway.store
    a = Reader(await Client.connect(f"{gateway.ws_url}/ws"))
    await a.until(lambda e: e["type"] == "session.ready")
    ready = a.events[0]
    sid = ready["session_id"]
    await a.client.send({"type": "user.message", "text": "[hang] take your time", "id": "u1"})
    await a.until(lambda e: e["type"] == "response.start")
    runtime = gateway.live_runtime(sid)
    assert runtime is not None
    store.commit_delay_s = 1.0  # the stop's final flush is slow: it stays STOPPING a while
    await a.stop()
    await wait_until(lambda: runtime.state is RuntimeState.STOPPING)

    last = max(a.seqs())
    async with await Client.connect(resume_url(gateway.ws_url, ready, last)) as b:
        resumed = await b.ready()
        store.commit_delay_s = 0.0
        end = (await b.turn("t1"))[-1]
        await b.send({"type": "user.message", "text": "Now answer", "id": "u2"})
        nxt = await b.turn("t2")
    assert runtime.state is RuntimeState.STOPPED
    assert (resumed["resumed"], resumed["seq"]) == (True, last)
    assert end["status"] == "interrupted"
    assert "did not come back" in end["reason"]
    assert nxt[-1]["status"] == "completed"
    check_view(merge_views(a.events, b.received))


async def test_two_resumes_racing_to_restore_make_one_runtime_and_the_later_takes_over() -> None:
    store = FlakyStore(MemoryStore(), stale_delays={"get": 0.1, "read_events": 0.1})
    manager = manager_on(store)
    session_id, token, _ = await manager.create()
    first, second = Sink(), Sink()
    one = asyncio.create_task(manager.resume(session_id, token, first, last_seq=0))
    await wait_until(lambda: store.calls["get"] > 0)
    two = asyncio.create_task(manager.resume(session_id, token, second, last_seq=0))
    runtimes = await asyncio.gather(one, two)
    assert runtimes[0] is runtimes[1], "two runtimes for one session"
    assert manager.live(session_id) is runtimes[1]
    assert len(manager) == 1
    assert first.close_code == 4409
    assert second.close_code is None
    assert store.calls["create"] == 1  # manager.create's: a resume creates nothing
    await wait_until(lambda: second.types() == ["session.ready"])
    await manager.shutdown()


async def test_two_keyed_attaches_racing_make_one_runtime_and_the_later_takes_over() -> None:
    store = FlakyStore(MemoryStore(), stale_delays={"get": 0.1})
    manager = manager_on(store)
    first, second = Sink(), Sink()
    one = asyncio.create_task(manager.attach_keyed("test", "call-7", first))
    await wait_until(lambda: store.calls["get"] > 0)
    two = asyncio.create_task(manager.attach_keyed("test", "call-7", second))
    runtimes = await asyncio.gather(one, two)
    assert runtimes[0] is runtimes[1], "two runtimes for one call"
    assert len(manager) == 1
    assert store.calls["create"] == 1
    assert first.close_code == 4409
    assert second.close_code is None
    await manager.shutdown()
