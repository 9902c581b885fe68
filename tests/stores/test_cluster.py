"""The Cluster contract: two instances, A and B, sharing one store, over every implementation.

``local``: two LocalClusters on one LocalHub and one memory store; ``redis``: two
RedisClusters, each with its own client, on one real redis-server. An instance that
was never entered (``async with``) renews no liveness: it stands for one that died
or is paused, which is how a takeover and a zombie owner are played here; real
SIGKILL / SIGSTOP of an owner process are in test_cluster_processes.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

import pytest

from gateway.cluster import (
    Cluster,
    FollowGap,
    Held,
    Inbound,
    LeaseLost,
    Signal,
    UnknownSession,
)
from gateway.cluster_local import LocalCluster, LocalHub
from gateway.stores.base import Fenced, SessionStore, StoredEvent
from gateway.stores.memory import MemoryStore
from gateway.stores.redis import RedisStore
from gateway.stores.redis_cluster import RedisCluster
from tests.stores.helpers import events, meta

T = TypeVar("T")
WAIT_S = 5.0


@dataclass
class Pair:
    store: SessionStore
    a: Cluster
    b: Cluster


@pytest.fixture(params=["local", "redis"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    if request.param == "local":
        store: SessionStore = MemoryStore()
        hub = LocalHub()
        yield Pair(
            store,
            LocalCluster(store, hub=hub, instance_id="A", poll_s=0.01),
            LocalCluster(store, hub=hub, instance_id="B", poll_s=0.01),
        )
        return
    url = request.getfixturevalue("redis_url")
    store_a, store_b = RedisStore(url), RedisStore(url)
    await store_a.open()
    await store_b.open()
    try:
        yield Pair(
            store_a,
            RedisCluster(store_a, instance_id="A", instance_ttl_s=1.0, block_s=0.1),
            RedisCluster(store_b, instance_id="B", instance_ttl_s=1.0, block_s=0.1),
        )
    finally:
        await store_a.aclose()
        await store_b.aclose()


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, WAIT_S)


async def next_signal(cluster: Cluster) -> Signal:
    async def first() -> Signal:
        async for signal in cluster.signals():
            return signal
        raise AssertionError("signals() ended")

    return await within(first())


async def test_one_owner_at_a_time_and_release_hands_over_at_once(pair: Pair) -> None:
    await pair.store.create(meta("s"), b"")
    async with pair.a, pair.b:
        lease_a = await pair.a.acquire("s")
        assert (lease_a.instance_id, lease_a.fence) == ("A", 1)

        with pytest.raises(Held) as held:
            await pair.b.acquire("s")
        assert held.value.placement.owner == "A"
        assert held.value.placement.owner_alive

        assert await pair.a.release(lease_a) is True
        assert await pair.a.release(lease_a) is False  # already given up
        lease_b = await pair.b.acquire("s")  # no TTL to wait for
        assert (lease_b.instance_id, lease_b.fence) == ("B", 2)
        placement = await pair.a.placement("s")
        assert (placement.owner, placement.fence, placement.owner_alive) == ("B", 2, True)


async def test_a_dead_owner_is_taken_over_and_its_lease_fenced(pair: Pair) -> None:
    await pair.store.create(meta("s"), b"")
    zombie = await pair.a.acquire("s")  # A never renews liveness: as if it died or paused
    a_writes = pair.a.fenced_store(zombie)
    await a_writes.commit("s", events=events(1, 2), state=b"by A")

    async with pair.b:
        assert not (await pair.b.placement("s")).owner_alive
        lease_b = await pair.b.acquire("s")
        assert lease_b.fence == zombie.fence + 1

        with pytest.raises(Fenced):  # A comes back: it can write nothing
            await a_writes.commit("s", events=events(3, 3), state=b"A again")
        assert await pair.a.release(zombie) is False

        b_writes = pair.b.fenced_store(lease_b)
        await b_writes.commit("s", events=events(3, 4), state=b"by B")
        got = await pair.store.get("s")
        assert got is not None
        assert got.state == b"by B"
        assert await pair.store.read_events("s", 0) == events(1, 4)


async def test_a_new_lease_of_the_same_instance_fences_its_older_runtime(pair: Pair) -> None:
    await pair.store.create(meta("s"), b"")
    async with pair.a:
        old = await pair.a.acquire("s")
        new = await pair.a.acquire("s")
        assert new.fence == old.fence + 1
        with pytest.raises(Fenced):
            await pair.a.fenced_store(old).commit("s", events=events(1, 1))
        await pair.a.fenced_store(new).commit("s", events=events(1, 1))


async def test_leaving_releases_every_lease(pair: Pair) -> None:
    for sid in ("s1", "s2"):
        await pair.store.create(meta(sid), b"")
    async with pair.a:
        await pair.a.acquire("s1")
        await pair.a.acquire("s2")
    assert not await pair.b.alive("A")
    for sid in ("s1", "s2"):
        placement = await pair.b.placement(sid)
        assert (placement.owner, placement.owner_alive) == ("", False)


async def test_unknown_sessions(pair: Pair) -> None:
    with pytest.raises(UnknownSession):
        await pair.a.acquire("nope")
    with pytest.raises(UnknownSession):
        await pair.a.placement("nope")
    with pytest.raises(UnknownSession):
        await pair.a.claim_edge("nope")


async def test_a_new_edge_tells_the_old_one_to_close(pair: Pair) -> None:
    await pair.store.create(meta("s"), b"")
    async with pair.a, pair.b:
        assert await pair.a.claim_edge("s") == (1, "")
        assert await pair.b.claim_edge("s") == (2, "A")

        assert await next_signal(pair.a) == Signal("takeover", "s", 2, "B")
        assert await pair.a.leave_edge("s", 1) is False  # the older socket leaving
        assert (await pair.a.placement("s")).edge == "B"
        assert await pair.b.leave_edge("s", 2) is True
        placement = await pair.a.placement("s")
        assert (placement.edge, placement.epoch) == ("", 2)


async def test_signals_arrive_in_order(pair: Pair) -> None:
    async with pair.a, pair.b:
        sent = [Signal("deleted", "s1", 0, "A"), Signal("wake", "s2", 3, "A")]
        for signal in sent:
            await pair.a.notify("B", signal)

        async def two() -> list[Signal]:
            got: list[Signal] = []
            async for signal in pair.b.signals():
                got.append(signal)
                if len(got) == 2:
                    return got
            return got

        assert await within(two()) == sent


async def test_releasing_tells_the_edge(pair: Pair) -> None:
    await pair.store.create(meta("s"), b"")
    async with pair.a, pair.b:
        lease = await pair.a.acquire("s")
        epoch, _ = await pair.b.claim_edge("s")
        await pair.a.release(lease)
        assert await next_signal(pair.b) == Signal("released", "s", epoch, "A")


async def _collect(stream: AsyncIterator[list[StoredEvent]], until_seq: int) -> list[int]:
    seen: list[int] = []
    async for batch in stream:
        seen += [e.seq for e in batch]
        if seen and seen[-1] >= until_seq:
            return seen
    return seen


async def test_follow_sees_every_commit_once_in_order(pair: Pair) -> None:
    await pair.store.create(meta("s"), b"")
    await pair.store.commit("s", events=events(1, 3))
    async with pair.a, pair.b:
        lease = await pair.a.acquire("s")
        writer = pair.a.fenced_store(lease)
        follower = asyncio.create_task(_collect(pair.b.follow("s", 2), 40))

        for first in range(4, 41, 3):
            await writer.commit("s", events=events(first, min(first + 2, 40)))
            await asyncio.sleep(0.005)

        assert await within(follower) == list(range(3, 41))


async def test_follow_reports_a_trimmed_gap(pair: Pair) -> None:
    await pair.store.create(meta("s"), b"")
    await pair.store.commit("s", events=events(1, 10))
    await pair.store.trim_events("s", 3)
    with pytest.raises(FollowGap):
        await within(_collect(pair.b.follow("s", 2), 10))
    assert await within(_collect(pair.b.follow("s", 7), 10)) == [8, 9, 10]


async def _take(inbox: AsyncIterator[Inbound], n: int) -> list[Inbound]:
    got: list[Inbound] = []
    async for message in inbox:
        got.append(message)
        if len(got) == n:
            break
    return got


async def test_forwarded_input_reaches_the_owner_and_survives_its_death(pair: Pair) -> None:
    await pair.store.create(meta("s"), b"")
    lease_a = await pair.a.acquire("s")  # A will die
    async with pair.b:
        for i in range(3):
            await pair.b.forward("s", 7, f"frame {i}".encode())

        got = await within(_take(pair.a.inbox(lease_a), 2))
        assert [(m.epoch, m.data) for m in got] == [(7, b"frame 0"), (7, b"frame 1")]
        # A handled frame 0 (it asked for the next one), not yet frame 1, then died.

        lease_b = await pair.b.acquire("s")
        rest = await within(_take(pair.b.inbox(lease_b), 2))
        assert [m.data for m in rest] == [b"frame 1", b"frame 2"]


async def test_an_owner_reading_its_inbox_learns_it_lost_the_lease(pair: Pair) -> None:
    await pair.store.create(meta("s"), b"")
    lease_a = await pair.a.acquire("s")
    async with pair.b:
        await pair.b.forward("s", 1, b"one")
        await pair.b.forward("s", 1, b"two")
        inbox = pair.a.inbox(lease_a)
        first = await within(anext(inbox))
        assert first.data == b"one"
        await pair.b.acquire("s")  # A is not alive: B takes over
        with pytest.raises(LeaseLost):
            await within(anext(inbox))


async def test_a_new_owner_takes_the_input_left_unhandled_at_once(pair: Pair) -> None:
    await pair.store.create(meta("s"), b"")
    lease_a = await pair.a.acquire("s")
    async with pair.b:
        for i in range(3):
            await pair.b.forward("s", 2, f"frame {i}".encode())
        await within(_take(pair.a.inbox(lease_a), 1))  # A read frame 0, never finished it
        assert await pair.a.release(lease_a)

        lease_b = await pair.b.acquire("s")
        pending = await pair.b.pending_input(lease_b)
        assert [m.data for m in pending] == [b"frame 0", b"frame 1", b"frame 2"]
        assert await pair.b.pending_input(lease_b) == []  # marked handled
        again = await pair.b.acquire("s")
        assert await pair.b.pending_input(again) == []


async def test_the_local_hub_forgets_released_sessions() -> None:
    store = MemoryStore()
    hub = LocalHub()
    cluster = LocalCluster(store, hub=hub, instance_id="A")
    await store.create(meta("s"), b"")
    async with cluster:
        lease = await cluster.acquire("s")
        assert "s" in hub.places
        await cluster.release(lease)
        assert hub.places == {}


def test_every_flat_client_event_crosses_instances_unchanged() -> None:
    from gateway.core.codes import ErrorCode
    from gateway.core.events import (
        FunctionResult,
        Greeted,
        Interrupt,
        PlaybackAck,
        ResponseCreate,
        SessionEnd,
        SessionUpdate,
        UserMessage,
    )
    from gateway.relay import decode_input, encode_input

    events = [
        UserMessage(text="héllo", id="u1"),
        Interrupt(turn_id="t1", heard_text="he"),
        PlaybackAck(turn_id="t1", index=2),
        ResponseCreate(instructions=None),
        SessionUpdate(instructions="be brief", language="es"),
        SessionEnd(),
        FunctionResult(call_id="c1", output='{"ok": true}'),
        Greeted(text="Hi!"),
    ]
    for event in events:
        assert decode_input(encode_input(event)) == event
    assert decode_input(encode_input((ErrorCode.INVALID_JSON, "bad"))) == (
        ErrorCode.INVALID_JSON,
        "bad",
    )
