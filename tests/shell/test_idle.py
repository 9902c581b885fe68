"""An idle session runtime holds no task: its pipeline runs on a task only while it
has work. Work after a quiet spell is stored, then sent, in order; a store that
fails then still gives up the same way; stopping an idle runtime still ends it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.core.events import UserMessage
from gateway.core.session import SessionConfig
from gateway.lifecycle import RuntimeState
from gateway.pipeline import StorePolicy
from gateway.providers.offline import OfflineProvider
from gateway.sessions import ManagerConfig, SessionManager
from gateway.stores.memory import MemoryStore
from tests.shell.test_races import Sink, manager_on
from tests.support.faults import FlakyStore, wait_until


async def test_the_pipeline_task_lives_only_while_there_is_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    manager = manager_on(store)
    sink = Sink()
    runtime, _ = await manager.start(sink)
    await wait_until(lambda: sink.types() == ["session.ready"])
    await wait_until(lambda: len(runtime._tasks) == 0)  # idle: nothing runs
    for turn in range(2):
        runtime.receive(UserMessage(text=f"Hello {turn}", id=f"u{turn}"))
        await wait_until(lambda t=turn: sink.types().count("response.end") == t + 1)
        await wait_until(lambda: len(runtime._tasks) == 0)
    seqs = [frame["seq"] for frame in sink.frames[1:]]
    assert seqs == list(range(1, len(seqs) + 1))  # every event, once, in order
    stored = await store.read_events(runtime.session.id, 0)
    assert [event.seq for event in stored] == seqs  # ... and each one stored
    runtime.stop("done")
    await runtime.stopped()
    assert runtime.state is RuntimeState.STOPPED
    assert manager.live(runtime.session.id) is None
    await manager.shutdown()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_an_idle_runtime_that_is_never_attached_still_stops() -> None:
    store = FlakyStore(MemoryStore())
    manager = manager_on(store)
    runtime = await manager.open_keyed("test", "never-attached")
    assert len(runtime._tasks) == 0
    runtime.stop("nobody came")
    await runtime.stopped()
    assert runtime.state is RuntimeState.STOPPED
    commits = store.calls["commit"]
    runtime._pipeline.mark_state()  # an effect that comes too late: not written
    assert len(runtime._tasks) == 0
    await asyncio.sleep(0.05)
    assert store.calls["commit"] == commits
    assert manager.live(runtime.session.id) is None


async def test_a_store_that_fails_after_a_quiet_spell_still_gives_up() -> None:
    store = FlakyStore(MemoryStore())
    manager = SessionManager(
        provider=OfflineProvider(token_delay_s=0),
        store=store,
        config=ManagerConfig(
            session=SessionConfig(provider="offline", model="echo"),
            store=StorePolicy(retry_budget_s=0.05),
        ),
    )
    sink = Sink()
    runtime, _ = await manager.start(sink)
    await wait_until(lambda: len(runtime._tasks) == 0)
    store.failing = True
    runtime.receive(UserMessage(text="Hello", id="u1"))
    await wait_until(lambda: sink.close_code is not None)
    assert sink.close_code == 1011
    await runtime.stopped()
    assert runtime.state is RuntimeState.STOPPED
    commits = store.calls["commit"]
    store.failing = False
    runtime.close_client(1000, "too late")  # a stopped runtime writes nothing more,
    runtime._pipeline.mark_state()  # whatever effect comes late
    assert len(runtime._tasks) == 0
    await asyncio.sleep(0.05)
    assert store.calls["commit"] == commits
    assert manager.live(runtime.session.id) is None
    await manager.shutdown()
