"""Session store cost under realistic turn traffic, for every backend.

Run: ``.venv/bin/python bench/store_bench.py [--turns 20] [--sessions 1 50] [--pace-ms 0]
[--dir DIR] [--no-redis]``.

Each session plays ``--turns`` turns, one after the other, as the gateway writes them:
a commit with ``response.start`` and the streaming turn, ~20 commits of 1-3
``response.tts`` events (~200 bytes of JSON each), then a commit with
``response.end``, the finished turn and a ~5 KB state blob. All sessions run at once,
flat out by default (a ``sleep(0)`` between commits stands for the socket send), or
``--pace-ms`` apart, like audio being streamed out, to see latency under a realistic
load rather than capacity. Prints, per
backend and session count: mean and p99 ms per commit, store ms per turn (the sum of
its commits), turns/s, and the worst event-loop lag a 1 ms heartbeat saw meanwhile.
SQLite files go to ``--dir`` (default: a temporary directory).

Redis rows (unless ``--no-redis``) run against redis-servers this script starts on
free ports (Debian's ``redis-server``): ``redis`` with AOF ``appendfsync everysec``,
``redis-fenced`` the same with every commit fenced by a lease (as the gateway writes
in the distributed mode), and ``redis-always`` with ``appendfsync always``. At the
end it prints the Redis memory used per session and per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.stores.base import SessionMeta, SessionStore, StoredEvent, TurnRecord
from gateway.stores.factory import open_store
from gateway.stores.redis import RedisStore
from gateway.stores.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer

TTS_COMMITS_PER_TURN = 20
STATE_BYTES = 5_000
HEARTBEAT_S = 0.001


@dataclass
class Stats:
    """What one run measured."""

    commit_ms: list[float] = field(default_factory=list)
    turn_ms: list[float] = field(default_factory=list)
    worst_lag_ms: float = 0.0


def _event(seq: int, kind: str, session_id: str, turn_id: str, text: str = "") -> StoredEvent:
    body = {"type": kind, "session_id": session_id, "seq": seq, "turn_id": turn_id}
    if text:
        body |= {"text": text, "index": seq, "final": False}
    return StoredEvent(seq=seq, type=kind, turn_id=turn_id, data=json.dumps(body))


def _turn(session_id: str, turn_id: str, started: float, ended: float | None) -> TurnRecord:
    done = ended is not None
    return TurnRecord(
        session_id=session_id,
        turn_id=turn_id,
        in_reply_to=f"msg-{turn_id}",
        user_text="What's the weather like tomorrow in Lisbon, and should I bring a coat?",
        status="completed" if done else None,
        text="Tomorrow in Lisbon looks mild. " * 8 if done else "",
        spoken_text="Tomorrow in Lisbon looks mild. " * 8 if done else None,
        reason="stop" if done else None,
        started_at=started,
        ended_at=ended,
        first_token_ms=180 if done else None,
        first_chunk_ms=420 if done else None,
        total_ms=3100 if done else None,
    )


async def _session(
    store: SessionStore,
    session_id: str,
    turns: int,
    pace: float,
    stats: Stats,
    writer: Callable[[str], Awaitable[SessionStore]] | None = None,
) -> None:
    rng = random.Random(session_id)
    now = time.time()
    await store.create(
        SessionMeta(session_id, "h" * 64, "bench", created_at=now, updated_at=now), b""
    )
    if writer is not None:
        store = await writer(session_id)  # commits fenced by the session's lease
    seq = 0

    def next_events(kind: str, count: int, turn_id: str, text: str = "") -> list[StoredEvent]:
        nonlocal seq
        batch = [_event(seq + i + 1, kind, session_id, turn_id, text) for i in range(count)]
        seq += count
        return batch

    async def commit(
        events: list[StoredEvent],
        turns: tuple[TurnRecord, ...] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
    ) -> float:
        started = time.perf_counter()
        await store.commit(
            session_id, events=events, turns=turns, state=state, updated_at=updated_at
        )
        took = (time.perf_counter() - started) * 1000
        stats.commit_ms.append(took)
        await asyncio.sleep(pace)  # the socket send, or the pace of the audio
        return took

    for n in range(turns):
        turn_id = f"{session_id}-t{n}"
        started = time.time()
        spent = await commit(
            next_events("response.start", 1, turn_id),
            turns=(_turn(session_id, turn_id, started, None),),
        )
        for _ in range(TTS_COMMITS_PER_TURN):
            text = "".join(rng.choices("abcdefghij klmnop qrstuvwxyz", k=120))
            spent += await commit(next_events("response.tts", rng.randint(1, 3), turn_id, text))
        ended = time.time()
        spent += await commit(
            next_events("response.end", 1, turn_id),
            turns=(_turn(session_id, turn_id, started, ended),),
            state=rng.randbytes(STATE_BYTES),
            updated_at=ended,
        )
        stats.turn_ms.append(spent)


async def _heartbeat(stop: asyncio.Event, stats: Stats) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(HEARTBEAT_S)
        lag = (loop.time() - before - HEARTBEAT_S) * 1000
        stats.worst_lag_ms = max(stats.worst_lag_ms, lag)


class _Fenced:
    """Opens the Redis store and hands each session a store fenced by its lease."""

    def __init__(self, store: RedisStore) -> None:
        self.cluster = RedisCluster(store, instance_id="bench")

    async def writer(self, session_id: str) -> SessionStore:
        return self.cluster.fenced_store(await self.cluster.acquire(session_id))


async def _run(url: str, sessions: int, turns: int, pace: float) -> tuple[Stats, float]:
    fence = url.endswith("#fenced")
    store = await open_store(url.removesuffix("#fenced"))
    fenced = _Fenced(store) if fence and isinstance(store, RedisStore) else None
    if isinstance(store, RedisStore):
        await store.client.flushall()
    stats = Stats()
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_heartbeat(stop, stats))
            started = time.perf_counter()
            async with asyncio.TaskGroup() as players:
                for i in range(sessions):
                    sid = f"s{i:03d}"
                    writer = None if fenced is None else fenced.writer
                    players.create_task(_session(store, sid, turns, pace, stats, writer))
            wall = time.perf_counter() - started
            stop.set()
    finally:
        await store.aclose()
    return stats, wall


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def _bench(urls: dict[str, str], session_counts: list[int], turns: int, pace: float) -> None:
    pacing = f"{pace * 1000:g} ms apart" if pace else "flat out"
    print(f"{turns} turns per session, {TTS_COMMITS_PER_TURN + 2} commits per turn, {pacing}")
    print(
        f"{'backend':13} {'sessions':>8} {'commits':>8} {'mean ms':>8} {'p99 ms':>8} "
        f"{'ms/turn':>8} {'turns/s':>9} {'max lag ms':>10}"
    )
    for name, url in urls.items():
        for sessions in session_counts:
            stats, wall = await _run(url.format(n=f"bench-{sessions}"), sessions, turns, pace)
            print(
                f"{name:13} {sessions:>8} {len(stats.commit_ms):>8} "
                f"{statistics.fmean(stats.commit_ms):>8.3f} {_p99(stats.commit_ms):>8.3f} "
                f"{statistics.fmean(stats.turn_ms):>8.2f} "
                f"{len(stats.turn_ms) / wall:>9.0f} {stats.worst_lag_ms:>10.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--pace-ms", type=float, default=0.0, help="wait between commits")
    parser.add_argument("--dir", type=Path, default=None, help="where SQLite files go")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        urls = {"memory": "memory://", "sqlite": f"sqlite:///{Path(tmp).resolve()}/{{n}}.db"}
        servers: list[RedisServer] = []
        try:
            if not args.no_redis:
                # One server per row: an AOF grown by an earlier row (and its rewrite)
                # would weigh on the next.
                everysec = RedisServer(Path(tmp) / "redis-everysec").start()
                fenced = RedisServer(Path(tmp) / "redis-fenced").start()
                always = RedisServer(Path(tmp) / "redis-always", appendfsync="always").start()
                servers += [everysec, fenced, always]
                urls |= {
                    "redis": everysec.url,
                    "redis-fenced": fenced.url + "#fenced",
                    "redis-always": always.url,
                }
            asyncio.run(_bench(urls, args.sessions, args.turns, args.pace_ms / 1000))
            if servers:
                asyncio.run(_memory(servers[0].url, args.turns))
        finally:
            for server in servers:
                server.stop()


async def _memory(url: str, turns: int) -> None:
    """Redis memory per session after ``turns`` turns, the stream trimmed to 256 and 1024."""
    for window in (256, 1024):
        store = RedisStore(url, max_events=window)
        await store.open()
        try:
            await store.client.flushall()
            before = int((await store.client.info("memory"))["used_memory"])
            sessions = 20
            stats = Stats()
            for i in range(sessions):
                await _session(store, f"m{i:03d}", max(turns, 60), 0.0, stats)
                await store.trim_events(f"m{i:03d}", window)
            after = int((await store.client.info("memory"))["used_memory"])
            events = sum([await store.client.xlen(f"vg:{{m{i:03d}}}:e") for i in range(sessions)])
            per_session = (after - before) / sessions
            print(
                f"redis memory, window {window}: {per_session / 1024:.0f} KiB per session "
                f"({max(turns, 60)} turns, {events // sessions} events held, "
                f"{(after - before) / max(events, 1):.0f} B per held event incl. turns and state)"
            )
        finally:
            await store.aclose()


if __name__ == "__main__":
    main()
