"""A real owner process on a real redis-server: SIGKILL and SIGSTOP/SIGCONT it.

The child (owner_child.py) owns a session and commits every 20 ms; this test is
instance B. After a SIGKILL, B can take the session over once the child's liveness
TTL ran out, not before. After a SIGSTOP longer than the TTL, B takes over, and the
child, resumed, has its next commit refused (fenced) and writes nothing more.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.cluster import Held, Lease
from gateway.stores.redis import RedisStore
from gateway.stores.redis_cluster import RedisCluster
from tests.stores.helpers import meta
from tests.stores.owner_child import FENCED_EXIT, event

REPO_ROOT = Path(__file__).resolve().parents[2]
TTL_S = 0.6


@asynccontextmanager
async def child(url: str, session_id: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.stores.owner_child",
        url,
        session_id,
        str(TTL_S),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def line_of(proc: asyncio.subprocess.Process, prefix: str) -> str:
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not line:
            assert proc.stderr is not None
            raise AssertionError("child ended: " + (await proc.stderr.read()).decode())
        if line.startswith(prefix):
            return line.strip()


async def take_over(cluster: RedisCluster, session_id: str) -> tuple[Lease, float, int]:
    """Acquire as soon as allowed: the lease, when, and how many refusals (Held) before."""
    refused = 0
    while True:
        try:
            return await cluster.acquire(session_id), time.monotonic(), refused
        except Held:
            refused += 1
            await asyncio.sleep(0.02)


@pytest.fixture
async def b(redis_url: str) -> AsyncIterator[RedisCluster]:
    store = RedisStore(redis_url)
    await store.open()
    try:
        async with RedisCluster(store, instance_id="B", instance_ttl_s=TTL_S) as cluster:
            yield cluster
    finally:
        await store.aclose()


async def test_a_killed_owner_is_taken_over_after_its_ttl(redis_url: str, b: RedisCluster) -> None:
    store = b.store
    await store.create(meta("s"), b"")
    async with child(redis_url, "s") as proc:
        owned = await line_of(proc, "owned")
        await line_of(proc, "committed 5")
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await proc.wait()

        lease, taken_at, refused = await take_over(b, "s")

    assert refused > 0  # the child's liveness outlived it for a while
    assert taken_at - killed_at <= TTL_S + 1.0
    assert lease.fence == int(owned.split()[1]) + 1
    written = await store.read_events("s", 0)
    assert [e.seq for e in written] == list(range(1, len(written) + 1))
    await b.fenced_store(lease).commit("s", events=[event(len(written) + 1, "B")])


async def test_a_paused_owner_is_fenced_when_it_comes_back(redis_url: str, b: RedisCluster) -> None:
    store = b.store
    await store.create(meta("s"), b"")
    async with child(redis_url, "s") as proc:
        await line_of(proc, "committed 5")
        proc.send_signal(signal.SIGSTOP)
        try:
            lease, _, refused = await take_over(b, "s")
            assert refused > 0
            last = (await store.read_events("s", 0))[-1].seq
            writer = b.fenced_store(lease)
            for seq in range(last + 1, last + 4):
                await writer.commit("s", events=[event(seq, "B")])
        finally:
            proc.send_signal(signal.SIGCONT)
        assert await line_of(proc, "fenced") == "fenced"
        assert await asyncio.wait_for(proc.wait(), 30) == FENCED_EXIT

    written = await store.read_events("s", 0)
    assert [e.seq for e in written] == list(range(1, last + 4))
    authors = [json.loads(e.data)["by"] for e in written]
    assert authors == ["child"] * last + ["B"] * 3  # nothing of the child after B took over
