"""The session manager with an injected clock: expiry, restore, token checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest

from gateway.core.codes import CloseCode
from gateway.core.replay import LoggedEvent
from gateway.core.session import SessionConfig
from gateway.providers.offline import OfflineProvider
from gateway.sessions import (
    ManagerConfig,
    ResumeRefused,
    SessionManager,
    TooManySessions,
    hash_token,
)
from gateway.stores.memory import MemoryStore


def make_manager(store: MemoryStore, clock: Callable[[], float] = time.time) -> SessionManager:
    return SessionManager(
        provider=OfflineProvider(token_delay_s=0),
        store=store,
        config=ManagerConfig(SessionConfig(provider="offline", model="m")),
        clock=clock,
    )


class Sink:
    """A client that keeps what it is sent."""

    def __init__(self) -> None:
        self.frames: list[LoggedEvent] = []
        self.closed_with: int | None = None

    @property
    def closed(self) -> bool:
        return self.closed_with is not None

    def deliver(self, frame: LoggedEvent, event: object = None) -> None:
        if not self.closed:
            self.frames.append(frame)

    def replay(self, frames: Sequence[LoggedEvent]) -> None:
        if not self.closed:
            self.frames.extend(frames)

    def close(self, code: int, reason: str) -> None:
        self.closed_with = self.closed_with or code

    def abort(self, code: int, reason: str) -> None:
        self.close(code, reason)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_sweep_expires_idle_sessions_but_keeps_live_ones() -> None:
    store, clock = MemoryStore(), Clock()
    manager = make_manager(store, clock)
    idle_id, _, _ = await manager.create()
    live, _ = await manager.start(Sink())
    clock.now += 3600
    fresh_id, _, _ = await manager.create()
    expired = await manager.sweep(ttl_s=600)
    remaining = {s.session_id for s in await store.list_sessions(limit=10)}
    await manager.shutdown()
    assert expired == [idle_id]
    assert remaining == {live.session.id, fresh_id}


async def test_resume_checks_the_token_against_its_hash() -> None:
    store = MemoryStore()
    manager = make_manager(store)
    session_id, token, _ = await manager.create()
    stored = await store.get(session_id)
    assert stored is not None
    assert stored.meta.token_hash == hash_token(token)
    assert token not in stored.meta.token_hash
    with pytest.raises(ResumeRefused) as refused:
        await manager.resume(session_id, token + "x", Sink(), last_seq=0)
    runtime = await manager.resume(session_id, token, Sink(), last_seq=0)
    again = await manager.resume(session_id, token, Sink(), last_seq=0)
    await manager.shutdown()
    assert refused.value.code == CloseCode.BAD_RESUME_TOKEN
    assert again is runtime


async def test_keyed_sessions_are_stable_per_platform_key() -> None:
    store = MemoryStore()
    manager = make_manager(store)
    first = await manager.open_keyed("twilio", "CA123")
    same = await manager.open_keyed("twilio", "CA123")
    other = await manager.open_keyed("retell", "CA123")
    first.stop()
    await first.stopped()
    restored = await manager.open_keyed("twilio", "CA123")
    ephemeral = manager.ephemeral(MemoryStore())
    ephemeral.stop()
    await ephemeral.stopped()
    await manager.shutdown()
    assert same is first
    assert other.session.id != first.session.id
    assert first.session.id.startswith("twilio_")
    assert restored is not first
    assert restored.session.id == first.session.id
    assert manager.live(ephemeral.session.id) is None
    stored = await store.get(first.session.id)
    assert stored is not None
    assert stored.meta.principal == "platform:twilio"  # gateway.tenants


async def test_the_per_caller_limit_counts_across_pages() -> None:
    # More than one page of the count (gateway.sessions._COUNT_PAGE), and other
    # callers' sessions in between, which do not count.
    store = MemoryStore()
    manager = SessionManager(
        provider=OfflineProvider(token_delay_s=0),
        store=store,
        config=ManagerConfig(
            SessionConfig(provider="offline", model="m"), max_sessions_per_principal=150
        ),
        clock=Clock(),
    )
    for i in range(150):
        await manager.create(principal="alice")
        if i % 3 == 0:
            await manager.create(principal="bob")
    with pytest.raises(TooManySessions, match="at most 150"):
        await manager.create(principal="alice")
    await manager.create(principal="bob")
    await store.delete((await store.list_sessions(limit=1, principal="alice"))[0].session_id)
    await manager.create(principal="alice")
