"""The store budgets wrapper: sessions counted across a restart, platform calls never
refused, the event log trimmed as it grows."""

from __future__ import annotations

import pytest

from gateway.budgets import CappedStore
from gateway.core.replay import LoggedEvent
from gateway.sessions import TooManySessions
from gateway.stores.base import SessionMeta
from gateway.stores.memory import MemoryStore


def meta(session_id: str, principal: str | None = None, at: float = 1.0) -> SessionMeta:
    return SessionMeta(session_id, "hash", principal, at, at)


async def test_the_count_survives_a_restart_and_follows_deletes_and_expiry() -> None:
    inner = MemoryStore()
    for i in range(3):
        await inner.create(meta(f"s_{i}", at=float(i)), b"{}")
    store = await CappedStore.wrap(inner, max_sessions=3)
    assert store.count == 3
    with pytest.raises(TooManySessions, match="maximum of 3 sessions"):
        await store.create(meta("s_new"), b"{}")
    await store.create(
        meta("twilio_abc", "platform:twilio", at=10.0), b"{}"
    )  # a call: never refused
    assert store.count == 4
    assert await store.delete("s_0")
    assert not await store.delete("s_0")
    assert store.count == 3
    assert len(await store.expire(idle_before=2.5)) == 2  # s_1, s_2
    assert store.count == 1
    await store.create(meta("s_new"), b"{}")


async def test_events_that_start_no_turn_are_trimmed_as_they_come() -> None:
    store = CappedStore(MemoryStore(), max_sessions=10, count=0, log_events=8, log_chars=10_000)
    await store.create(meta("s_1"), b"{}")
    for seq in range(1, 41):
        event = LoggedEvent(seq, "session.updated", None, "x" * 100)
        await store.commit("s_1", events=[event])
    assert len(await store.read_events("s_1", 0)) <= 16
    for seq in range(41, 61):
        event = LoggedEvent(seq, "session.updated", None, "y" * 4_000)
        await store.commit("s_1", events=[event])
    kept = await store.read_events("s_1", 0)
    assert sum(len(e.data) for e in kept) <= 2 * 10_000
    assert kept[-1].seq == 60
