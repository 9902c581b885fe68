"""Child process for the owner-death tests: own a session on Redis and write to it.

Run as ``python -m tests.stores.owner_child REDIS_URL SESSION_ID TTL_S``. It joins as
instance ``child``, acquires the session, says ``owned <fence>``, then commits one
event every 20 ms (JSON ``{"by": "child", "seq": n}``), saying ``committed <n>``
after each. A commit refused as fenced makes it say ``fenced`` and exit 3.
"""

from __future__ import annotations

import asyncio
import json
import sys

from gateway.stores.base import Fenced, StoredEvent
from gateway.stores.redis import RedisStore
from gateway.stores.redis_cluster import RedisCluster

FENCED_EXIT = 3


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def event(seq: int, by: str) -> StoredEvent:
    return StoredEvent(seq, "response.tts", "t1", json.dumps({"by": by, "seq": seq}))


async def main(url: str, session_id: str, ttl_s: float) -> int:
    store = RedisStore(url)
    await store.open()
    async with RedisCluster(store, instance_id="child", instance_ttl_s=ttl_s) as cluster:
        lease = await cluster.acquire(session_id)
        writer = cluster.fenced_store(lease)
        say(f"owned {lease.fence}")
        seq = 0
        while True:
            try:
                await writer.commit(session_id, events=[event(seq + 1, "child")])
            except Fenced:
                say("fenced")
                return FENCED_EXIT
            seq += 1
            say(f"committed {seq}")
            await asyncio.sleep(0.02)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]))))
