"""Redis-only store behaviour: fencing, retried batches, bounds, TTLs, URLs, a server crash.

The contract suite (test_contract.py) covers the SessionStore semantics; these pin
what only the distributed backend does, against a real redis-server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest

from gateway.logformat import describe_store
from gateway.stores.base import StoreError
from gateway.stores.factory import is_distributed, open_store, store_from_url
from gateway.stores.fenced import FencedStore
from gateway.stores.redis import Fenced, RedisStore, key, mask_url
from tests.stores.helpers import event, events, meta, turn
from tests.support.redis_server import RedisServer


@pytest.fixture
async def rstore(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_url, ttl_s=600, max_events=200)
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


async def _lease(store: RedisStore, sid: str, owner: str, fence: int) -> None:
    await store.client.hset(key(sid, "m"), mapping={"owner": owner, "fence": fence})


async def test_a_stale_lease_is_fenced_and_writes_nothing(rstore: RedisStore) -> None:
    await rstore.create(meta("s"), b"v0")
    await _lease(rstore, "s", "A", 1)
    a = FencedStore(rstore, partial(rstore.commit, lease=("A", 1)))
    await a.commit("s", events=events(1, 2), turns=[turn("t1")], state=b"v1")

    await _lease(rstore, "s", "B", 2)  # B took the session over
    with pytest.raises(Fenced, match="owner=B"):
        await a.commit("s", events=events(3, 3), turns=[turn("t2")], state=b"v2", updated_at=5000.0)
    with pytest.raises(Fenced):  # unfenced while someone owns it: refused too
        await rstore.commit("s", updated_at=5000.0)

    got = await rstore.get("s")
    assert got is not None
    assert (got.state, got.meta.updated_at) == (b"v1", 1000.0)
    assert await rstore.read_events("s", 0) == events(1, 2)
    assert await rstore.list_turns("s") == [turn("t1")]
    await rstore.commit("s", events=events(3, 3), lease=("B", 2))
    assert await rstore.read_events("s", 2) == events(3, 3)


async def test_the_same_owner_with_an_older_fence_is_fenced(rstore: RedisStore) -> None:
    await rstore.create(meta("s"), b"")
    await _lease(rstore, "s", "A", 7)
    # A lost the lease and took it again: a runtime with its old fence is dead.
    with pytest.raises(Fenced):
        await rstore.commit("s", events=events(1, 1), lease=("A", 6))
    assert await rstore.read_events("s", 0) == []


async def test_a_retried_batch_is_done_once_and_a_different_one_refused(
    rstore: RedisStore,
) -> None:
    await rstore.create(meta("s"), b"")
    await rstore.commit("s", events=events(1, 3))
    # The same batch again (as redis-py sends it when a reply is lost): already stored.
    await rstore.commit("s", events=events(2, 3))
    assert await rstore.read_events("s", 0) == events(1, 3)
    # Other events under seqs already taken: refused.
    with pytest.raises(StoreError, match="seq 2 does not continue"):
        await rstore.commit("s", events=[event(2, size=5), event(3)])
    assert await rstore.read_events("s", 0) == events(1, 3)


async def test_the_stream_stays_near_the_replay_window(rstore: RedisStore) -> None:
    await rstore.create(meta("s"), b"")
    for first in range(1, 1001, 10):
        await rstore.commit("s", events=events(first, first + 9))

    held = await rstore.client.xlen(key("s", "e"))
    assert 200 <= held < 400  # MAXLEN ~ 200 trims whole nodes
    first_seq = await rstore.first_seq("s")
    assert first_seq is not None
    assert await rstore.read_events("s", first_seq - 1) == events(first_seq, 1000)


async def test_every_key_expires_with_the_session_ttl(rstore: RedisStore) -> None:
    await rstore.create(meta("s"), b"")
    await rstore.commit("s", events=events(1, 1), turns=[turn("t1")])
    for kind in "met":
        ttl_ms = await rstore.client.pttl(key("s", kind))
        assert 590_000 < ttl_ms <= 600_000, kind


async def test_sessions_whose_keys_expired_leave_the_listing(rstore: RedisStore) -> None:
    for i, sid in enumerate("abc"):
        await rstore.create(meta(sid, created_at=float(i)), b"")
    await rstore.client.delete(key("b", "m"))  # as when its TTL ran out

    assert [m.session_id for m in await rstore.list_sessions(limit=10)] == ["c", "a"]
    assert await rstore.client.zscore("vg:idx:created", "b") is None
    assert await rstore.list_sessions(limit=1, before=(2.0, "c")) == [meta("a", created_at=0.0)]


async def test_expire_rechecks_the_session_itself(rstore: RedisStore) -> None:
    await rstore.create(meta("s", updated_at=10.0), b"")
    await rstore.client.hset(key("s", "m"), "updated_at", "500.0")  # index is behind
    assert await rstore.expire(100.0) == []
    assert await rstore.get("s") is not None


async def test_acknowledged_commits_survive_a_redis_crash(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()  # AOF everysec
    try:
        store = await open_store(server.url)
        await store.create(meta("s"), b"")
        for first in range(1, 301, 3):
            await store.commit("s", events=events(first, first + 2), state=str(first).encode())
        server.kill()  # SIGKILL: no shutdown flush
        server.start()
        got = await store.get("s")  # the same client reconnects by itself
        assert got is not None
        assert got.state == b"298"
        assert await store.read_events("s", 0) == events(1, 300)
        await store.commit("s", events=events(301, 301))
        await store.aclose()
    finally:
        server.stop()


async def test_an_unreachable_server_is_a_store_error_with_the_password_masked(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    url = f"redis://:hunter2secret@127.0.0.1:{server.port}/0"
    server.stop()
    with pytest.raises(StoreError) as caught:
        await open_store(url)
    assert "hunter2secret" not in str(caught.value)
    assert "***@127.0.0.1" in str(caught.value)


def test_urls() -> None:
    assert isinstance(store_from_url("redis://localhost:6379/0"), RedisStore)
    assert isinstance(store_from_url("rediss://:pw@cache.example:6380/2"), RedisStore)
    assert is_distributed("redis://h:1/0")
    assert is_distributed("REDISS://h:1/0")
    assert not is_distributed("sqlite:///x.db")
    assert not is_distributed("memory://")
    with pytest.raises(ValueError, match="needs a host"):
        store_from_url("redis:///0")
    assert mask_url("redis://user:pw@h:1/0") == "redis://***@h:1/0"
    assert mask_url("rediss://:pw@h:1/0") == "rediss://***@h:1/0"
    assert mask_url("redis://h:1/0") == "redis://h:1/0"
    assert "s3cret" not in describe_store("redis://:s3cret@h:1/0")
    assert store_from_url("redis://:s3cret@h:1/0").url == "redis://***@h:1/0"  # type: ignore[attr-defined]


async def test_streaming_sessions_leave_out_those_a_live_instance_runs(rstore: RedisStore) -> None:
    for sid in ("orphan", "running", "dead-owner"):
        await rstore.create(meta(sid), b"")
        await rstore.commit(sid, turns=[turn("t1", session_id=sid)])
    await _lease(rstore, "running", "alive", 1)
    await _lease(rstore, "dead-owner", "dead", 1)
    await rstore.client.set("vg:inst:alive", b"1", px=5000)

    assert await rstore.streaming_sessions() == ["dead-owner", "orphan"]


async def test_more_commands_at_once_than_redis_pys_default_pool_of_100(
    rstore: RedisStore,
) -> None:
    """Every command in flight holds a pooled connection; 150 at once all get one."""
    many, queue = 150, "vg:test:queue"
    waiting = [asyncio.create_task(rstore.client.blpop([queue], timeout=4)) for _ in range(many)]
    try:
        deadline = asyncio.get_running_loop().time() + 3
        while (await rstore.client.info("clients"))["blocked_clients"] < many:
            assert asyncio.get_running_loop().time() < deadline, "fewer than 150 connections"
            await asyncio.sleep(0.02)
        await rstore.client.rpush(queue, *range(many))
        assert all(await asyncio.gather(*waiting))
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)


async def test_closing_gives_up_on_a_pool_that_never_closes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py can wait forever for a socket's close: a shutdown must not (fault
    injected: the client's close never returns)."""
    import gateway.stores.redis as redis_store

    store = RedisStore(redis_url)
    await store.open()
    client = store.client
    real_close = client.aclose
    never = asyncio.Event()

    async def hang(*_: object, **__: object) -> None:
        await never.wait()

    monkeypatch.setattr(client, "aclose", hang)
    monkeypatch.setattr(redis_store, "CLOSE_TIMEOUT_S", 0.2)
    try:
        await asyncio.wait_for(store.aclose(), 5)
        assert "did not close within 0.2 s" in caplog.text
        with pytest.raises(StoreError):
            await store.get("s")
    finally:
        await real_close()
