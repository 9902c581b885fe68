"""A session's ``updated_at`` goes with a commit at most every ``touch_every_s``: the
time is an index entry to rewrite, a page write of its own per commit, and what
reads it (expiry, the API's listing) needs it to the second, not to the chunk."""

from __future__ import annotations

import asyncio

from gateway.app import store_policy
from gateway.pipeline import Pipeline, StorePolicy
from gateway.settings import Settings
from gateway.stores.memory import MemoryStore
from tests.stores.helpers import meta
from tests.support.faults import FlakyStore


async def test_updated_at_goes_with_a_commit_at_most_every_touch_interval() -> None:
    store = MemoryStore()
    await store.create(meta("s", created_at=1.0), b"")
    now = [100.0]
    pipeline = Pipeline(
        "s",
        store,
        snapshot=lambda: f"state at {now[0]}".encode(),
        dispatch=lambda item: None,
        wake=lambda: None,
        clock=lambda: now[0],
        trim_to=100,
        policy=StorePolicy(touch_every_s=5.0),
    )
    stored: list[tuple[bytes, float]] = []
    for at in (100.0, 102.0, 104.9, 105.0, 106.0, 111.0, 95.0):
        now[0] = at
        pipeline.mark_state()
        await pipeline.run()
        got = await store.get("s")
        assert got is not None
        stored.append((got.state, got.meta.updated_at))

    # Every commit stored its snapshot; the time moved with the first, then 5 s on,
    # and when the clock went back.
    assert [state for state, _ in stored] == [
        f"state at {at}".encode() for at in (100.0, 102.0, 104.9, 105.0, 106.0, 111.0, 95.0)
    ]
    assert [updated for _, updated in stored] == [100.0, 100.0, 100.0, 105.0, 105.0, 111.0, 95.0]


async def flaky_pipeline(now: list[float]) -> tuple[MemoryStore, FlakyStore, Pipeline]:
    """A pipeline on a store that fails while ``failing`` (retried every 10 ms), with
    the clock ``now[0]`` and the default touch interval of 5 s."""
    inner = MemoryStore()
    await inner.create(meta("s", created_at=1.0), b"")
    store = FlakyStore(inner)
    pipeline = Pipeline(
        "s",
        store,
        snapshot=lambda: b"state",
        dispatch=lambda item: None,
        wake=lambda: None,
        clock=lambda: now[0],
        trim_to=100,
        policy=StorePolicy(backoff_s=0.01, backoff_max_s=0.01),
    )
    return inner, store, pipeline


async def test_a_retried_commit_carries_the_time_it_was_stored() -> None:
    inner, store, pipeline = await flaky_pipeline(now := [100.0])
    store.failing = True
    pipeline.mark_state()
    running = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0)  # its first attempt fails at once; it waits to retry
    assert store.failures["commit"] == 1
    now[0], store.failing = 107.0, False  # the store is back 7 s later
    await running
    got = await inner.get("s")
    assert got is not None
    assert got.meta.updated_at == 107.0


async def test_a_commit_retried_past_the_touch_interval_carries_the_time() -> None:
    # Its first attempt, 2 s after the last touch, would not carry updated_at; it
    # lands 7 s after it, so it does: the session's time is never more than the
    # interval behind a commit that landed.
    inner, store, pipeline = await flaky_pipeline(now := [100.0])
    pipeline.mark_state()
    await pipeline.run()  # touches at 100
    now[0], store.failing = 102.0, True
    pipeline.mark_state()
    running = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0)  # its first attempt fails at once; it waits to retry
    assert store.failures["commit"] == 1
    now[0], store.failing = 107.0, False
    await running
    got = await inner.get("s")
    assert got is not None
    assert got.meta.updated_at == 107.0


def test_a_short_session_ttl_shortens_the_touch_interval() -> None:
    def policy(ttl_s: float) -> StorePolicy:
        return store_policy(Settings(_env_file=None, GATEWAY_SESSION_TTL_S=ttl_s))

    assert policy(86400).touch_every_s == 5.0
    assert policy(20).touch_every_s == 2.0
    assert policy(20).retry_budget_s == Settings(_env_file=None).store_retry_s
