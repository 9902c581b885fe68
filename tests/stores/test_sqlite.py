"""SQLite-only behaviour: durability, pragmas, migrations, threading, and URL parsing."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.stores import sqlite as sqlite_module
from gateway.stores.base import SessionStore, StoreError
from gateway.stores.factory import open_store, store_from_url
from gateway.stores.memory import MemoryStore
from gateway.stores.sqlite import MEMORY_PATH, SCHEMA_VERSION, SqliteStore, migrate
from tests.stores import crash_child
from tests.stores.helpers import event, events, meta, turn

REPO_ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def opened(path: str | Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(path)
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


def raw(path: Path, sql: str) -> Any:
    """One value from a plain connection to the file (closed again)."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchone()[0]


def wal_bytes(path: Path) -> int:
    """Size of the database's write-ahead log, 0 if there is none."""
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


# Durability ----------------------------------------------------------------------------


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    async with opened(path) as store:
        await store.create(meta("s"), b"\x00state")
        await store.commit(
            "s", events=events(1, 4), turns=[turn("t1", status="completed")], updated_at=1500.0
        )

    async with opened(path) as store:
        got = await store.get("s")
        assert got is not None
        assert got.state == b"\x00state"
        assert got.meta == meta("s", updated_at=1500.0)
        assert await store.read_events("s", 0) == events(1, 4)
        assert await store.list_turns("s") == [turn("t1", status="completed")]
        # The seq continues across the reopen.
        with pytest.raises(StoreError):
            await store.commit("s", events=events(1, 1))
        await store.commit("s", events=events(5, 5))


async def test_committed_batch_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.stores.crash_child",
        str(path),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        wal_size = wal_bytes(path) if line == b"committed\n" else 0
    finally:
        proc.kill()
        _, stderr = await proc.communicate()
    assert line == b"committed\n", stderr.decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL
    assert wal_size > 0  # the batch was in the WAL, never checkpointed by a clean close

    async with opened(path) as store:
        got = await store.get(crash_child.SESSION_ID)
        assert got is not None
        assert got.state == crash_child.STATE
        assert got.meta.updated_at == crash_child.UPDATED_AT
        assert await store.read_events(crash_child.SESSION_ID, 0) == crash_child.EVENTS
        assert await store.list_turns(crash_child.SESSION_ID) == crash_child.TURNS


# Pragmas and schema --------------------------------------------------------------------


async def test_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    async with opened(path) as store:
        await store.create(meta("s"), b"")
        assert raw(path, "PRAGMA journal_mode") == "wal"  # persistent, seen by any connection
        assert wal_bytes(path) > 0

        def pragma(name: str) -> Any:
            return lambda conn: conn.execute(f"PRAGMA {name}").fetchone()[0]

        assert await store._run(pragma("synchronous")) == 1  # NORMAL
        assert await store._run(pragma("foreign_keys")) == 1
        assert await store._run(pragma("busy_timeout")) >= 1000


async def test_migration_sets_user_version(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    async with opened(path):
        pass

    assert SCHEMA_VERSION == 3
    assert raw(path, "PRAGMA user_version") == SCHEMA_VERSION
    with closing(sqlite3.connect(path)) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        # (referenced table, ON DELETE action) of every foreign key of turns and events
        fks = {
            (row[2], row[6])
            for table in ("turns", "events", "state_pieces")
            for row in conn.execute(f"PRAGMA foreign_key_list({table})")
        }
    assert {"sessions", "state_pieces", "turns", "events", "sessions_by_created"} <= names
    assert "sessions_by_updated" in names
    assert fks == {("sessions", "CASCADE")}

    # Reopening finds the schema current and leaves it alone.
    async with opened(path) as store:
        await store.ping()
    assert raw(path, "PRAGMA user_version") == SCHEMA_VERSION


async def test_a_version_1_database_keeps_its_sessions_states_and_logs(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        sqlite_module.MIGRATIONS[0](conn)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO sessions (session_id, token_hash, principal, created_at, updated_at, "
            "last_seq, state) VALUES ('old', 'h', NULL, 1.0, 2.0, 3, x'0102')"
        )
        for seq in (1, 2, 3):
            conn.execute(
                "INSERT INTO events (session_id, seq, type, turn_id, data) "
                f"VALUES ('old', {seq}, 'response.tts', 't1', '{{}}')"
            )
    async with opened(path) as store:
        got = await store.get("old")
        assert got is not None
        assert (got.state, got.meta.updated_at) == (b"\x01\x02", 2.0)
        await store.commit("old", events=[event(4, session_id="old")], state=b"new")
        assert [e.seq for e in await store.read_events("old", 0)] == [1, 2, 3, 4]
        got = await store.get("old")
        assert got is not None
        assert got.state == b"new"
        assert await store.delete("old")
    assert raw(path, "SELECT count(*) FROM state_pieces") == 0  # deleted with its session


def test_migrate_reports_the_version_found() -> None:
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        assert migrate(conn) == 0
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert migrate(conn) == SCHEMA_VERSION


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
        conn.commit()

    store = SqliteStore(path)
    with pytest.raises(StoreError, match="newer"):
        await store.open()
    await store.aclose()


async def test_list_sessions_uses_the_index(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    async with opened(path):
        pass
    with closing(sqlite3.connect(path)) as conn:
        plan = " ".join(
            str(row[3])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT session_id FROM sessions "
                "WHERE (created_at, session_id) < (?, ?) "
                "ORDER BY created_at DESC, session_id DESC LIMIT 10",
                (1.0, "x"),
            )
        )
    assert "sessions_by_created" in plan
    assert "TEMP B-TREE" not in plan  # no sort step


# Opening and closing -------------------------------------------------------------------


async def test_open_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "gw.db"
    async with opened(path) as store:
        await store.ping()
    assert path.is_file()


@pytest.mark.parametrize("where", ["parent-is-a-file", "path-is-a-directory"])
async def test_unusable_path_raises_store_error(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "file" / "gw.db" if where == "parent-is-a-file" else tmp_path
    store = SqliteStore(path)

    with pytest.raises(StoreError, match="cannot open SQLite store") as info:
        await store.open()

    assert str(path) in str(info.value)
    await store.aclose()


async def test_not_a_database_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    path.write_bytes(b"this is not an SQLite database, just some bytes" * 100)

    store = SqliteStore(path)
    with pytest.raises(StoreError, match="cannot open SQLite store"):
        await store.open()
    await store.aclose()


async def test_use_before_open_and_reopen_after_close(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "gw.db")
    with pytest.raises(StoreError, match="not open"):
        await store.ping()

    await store.open()
    await store.open()  # already open: nothing happens
    await store.aclose()

    with pytest.raises(StoreError, match="closed"):
        await store.open()
    with pytest.raises(StoreError, match="closed"):
        await store.ping()


def store_threads() -> int:
    return sum(t.name.startswith("sqlite-store") for t in threading.enumerate())


async def test_concurrent_opens_connect_once_and_aclose_stops_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects: list[str] = []
    connect = sqlite_module._connect

    def counting_connect(path: str) -> sqlite3.Connection:
        connects.append(path)
        return connect(path)

    monkeypatch.setattr(sqlite_module, "_connect", counting_connect)
    before = store_threads()
    store = SqliteStore(tmp_path / "gw.db")

    await asyncio.gather(store.open(), store.open(), store.open())
    await store.ping()
    assert len(connects) == 1
    assert store_threads() == before + 1

    await asyncio.gather(store.aclose(), store.aclose())
    assert store_threads() == before


async def test_failed_open_leaves_no_thread(tmp_path: Path) -> None:
    before = store_threads()
    store = SqliteStore(tmp_path)  # a directory

    with pytest.raises(StoreError):
        await store.open()

    assert store_threads() == before


async def test_aclose_lets_queued_calls_finish(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    store = SqliteStore(path)
    await store.open()
    for n in range(20):
        await store.create(meta(f"s{n}"), b"")

    async with asyncio.TaskGroup() as tg:
        for n in range(20):
            tg.create_task(store.commit(f"s{n}", events=events(1, 50), state=b"done"))
        await asyncio.sleep(0)  # each task runs to its first await: its commit is queued
        await store.aclose()

    async with opened(path) as store:
        for n in range(20):
            got = await store.get(f"s{n}")
            assert got is not None
            assert got.state == b"done"
            assert len(await store.read_events(f"s{n}", 0)) == 50


# Threading -----------------------------------------------------------------------------


async def test_concurrent_commits_for_many_sessions_all_land(tmp_path: Path) -> None:
    sessions, commits = 40, 15

    async def run(sid: str) -> None:
        await store.create(meta(sid), b"")
        for n in range(1, commits + 1):
            await store.commit(
                sid,
                events=[event(n, session_id=sid)],
                turns=[turn(f"t{n}", session_id=sid, started_at=float(n))],
                state=f"{sid}:{n}".encode(),
                updated_at=2000.0 + n,
            )

    async with opened(tmp_path / "gw.db") as store:
        async with asyncio.TaskGroup() as tg:
            for i in range(sessions):
                tg.create_task(run(f"s{i}"))

        assert len(await store.list_sessions(limit=1000)) == sessions
        for i in range(sessions):
            sid = f"s{i}"
            assert await store.read_events(sid, 0) == [
                event(n, session_id=sid) for n in range(1, commits + 1)
            ]
            assert len(await store.list_turns(sid)) == commits
            got = await store.get(sid)
            assert got is not None
            assert (got.state, got.meta.updated_at) == (f"{sid}:{commits}".encode(), 2015.0)


@asynccontextmanager
async def held_worker(store: SqliteStore) -> AsyncIterator[threading.Event]:
    """Keep the store's worker thread busy until the yielded event is set, so that
    every call made meanwhile queues up for the same batch (one transaction)."""
    release, busy = threading.Event(), threading.Event()

    def hold(_: sqlite3.Connection) -> None:
        busy.set()
        release.wait(10)

    holding = asyncio.ensure_future(store._run(hold))
    await asyncio.get_running_loop().run_in_executor(None, busy.wait, 10)
    try:
        yield release
    finally:
        release.set()
        await holding


async def test_a_failing_call_fails_alone_in_its_batch(tmp_path: Path) -> None:
    def write_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE state_pieces SET data = x'ff' WHERE session_id = 'b'")
        raise ValueError("this call fails after writing")

    async with opened(tmp_path / "gw.db") as store:
        for sid in ("a", "b", "c"):
            await store.create(meta(sid), b"")
        async with held_worker(store):
            calls = [
                asyncio.ensure_future(store.commit("a", events=events(1, 3, session_id="a"))),
                asyncio.ensure_future(store._run(write_then_fail)),
                # A gap in seq: refused.
                asyncio.ensure_future(store.commit("b", events=[event(5, session_id="b")])),
                asyncio.ensure_future(store.commit("c", events=events(1, 2, session_id="c"))),
            ]
            await asyncio.sleep(0.05)
            assert not any(call.done() for call in calls), "a call ran outside the batch"
        ok_a, failed, gap, ok_c = await asyncio.gather(*calls, return_exceptions=True)
        assert ok_a is None
        assert ok_c is None
        assert isinstance(failed, ValueError)
        assert isinstance(gap, StoreError)
        assert len(await store.read_events("a", 0)) == 3
        assert len(await store.read_events("c", 0)) == 2
        assert await store.read_events("b", 0) == []
        b = await store.get("b")
        assert b is not None
        assert b.state == b"", "the failed call's write was kept"


async def test_nothing_is_reported_stored_when_the_batch_does_not_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.db"

    def poison(conn: sqlite3.Connection) -> None:
        # Checked at COMMIT only: the batch's transaction cannot commit.
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute(
            "INSERT INTO events (session_id, seq, type, turn_id, data) "
            "VALUES ('nobody', 1, 'x', NULL, '{}')"
        )

    async with opened(path) as store:
        await store.create(meta("a"), b"before")
        async with held_worker(store):
            commit = asyncio.ensure_future(
                store.commit("a", events=events(1, 2, session_id="a"), state=b"after")
            )
            poisoned = asyncio.ensure_future(store._run(poison))
            await asyncio.sleep(0.05)
        results = await asyncio.gather(commit, poisoned, return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results
        # The store is usable again, and holds nothing of the failed batch.
        assert await store.read_events("a", 0) == []
        got = await store.get("a")
        assert got is not None
        assert got.state == b"before"
        await store.commit("a", events=events(1, 1, session_id="a"))
        assert len(await store.read_events("a", 0)) == 1


async def test_a_locked_database_does_not_hold_up_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    async with opened(path) as store:
        await store.create(meta("s"), b"")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        beat = asyncio.ensure_future(heartbeat())
        try:
            commit = asyncio.ensure_future(store.commit("s", events=events(1, 2)))
            await asyncio.sleep(0.3)
            assert not commit.done(), "the commit did not wait for the lock"
            assert ticks >= 10, "the event loop waited for the lock"
            other.execute("COMMIT")
            await asyncio.wait_for(commit, 5)
        finally:
            beat.cancel()
            other.close()
        assert len(await store.read_events("s", 0)) == 2


async def test_the_wal_is_checkpointed_while_commits_run_on_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    every = sqlite_module.CHECKPOINT_EVERY
    commits = 8 * every
    async with opened(path) as store:
        await store.create(meta("s"), b"")
        per_commit = 0.0
        for n in range(1, commits + 1):
            await store.commit("s", events=[event(n, size=1000)], state=b"x" * 1000)
            if n == every // 2:
                per_commit = wal_bytes(path) / n  # no checkpoint yet
            if n % 50 == 0:
                await asyncio.sleep(0.01)  # room for the worker's checkpoints
        assert per_commit > 0
        # Unchecked, the log would hold all 8 intervals' pages; checkpointed, it is
        # written from its start again and stays within a few intervals.
        assert wal_bytes(path) < 3 * every * per_commit, (wal_bytes(path), per_commit)
        assert len(await store.read_events("s", 0)) == commits


async def test_event_loop_keeps_running_during_a_large_commit(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    batch = events(1, 40_000, size=200)  # ~10 MB of JSON
    state = b"s" * 5_000_000
    committing = False
    ticks_during_commit = 0
    stop = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal ticks_during_commit
        while not stop.is_set():
            await asyncio.sleep(0.001)
            ticks_during_commit += committing

    async with opened(tmp_path / "gw.db") as store:
        await store.create(meta("s"), b"")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(heartbeat())
            committing = True
            started = loop.time()
            await store.commit("s", events=batch, state=state)
            took = loop.time() - started
            committing = False
            stop.set()
        assert len(await store.read_events("s", 39_990)) == 10

    # Run on the loop, the commit would leave no room for a single tick.
    assert took > 0.02, "the commit was too quick to tell anything"
    assert ticks_during_commit >= 3, (ticks_during_commit, took)
    # How long the loop may stall is a figure, not a behaviour: bench/store_bench.py
    # prints it (event-loop lag) beside the commit costs.


async def test_cancelled_caller_leaves_the_store_usable(tmp_path: Path) -> None:
    async with opened(tmp_path / "gw.db") as store:
        await store.create(meta("s"), b"")
        task = asyncio.create_task(store.commit("s", events=events(1, 20_000)))
        await asyncio.sleep(0)  # let it queue its commit
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The commit either ran whole or not at all; the next batch continues it.
        held = await store.read_events("s", 0)
        assert held in ([], events(1, 20_000))
        await store.commit("s", events=[event(len(held) + 1)])
        assert len(await store.read_events("s", 0)) == len(held) + 1


# Same behaviour as MemoryStore ---------------------------------------------------------

_ids = st.sampled_from(["a", "b", "c"])
_times = st.integers(0, 6).map(float)
_create = st.tuples(st.just("create"), _ids, _times, _times)
_commit = st.tuples(
    st.just("commit"),
    _ids,
    st.integers(0, 4),  # events in the batch
    st.sampled_from([0, 0, 0, 0, 0, 1, -1]),  # seq offset: mostly right
    st.lists(st.tuples(st.sampled_from(["t1", "t2", "t3"]), _times, st.booleans()), max_size=3),
    st.one_of(st.none(), st.binary(max_size=8)),
    st.one_of(st.none(), _times),
)
_trim = st.tuples(st.just("trim"), _ids, st.integers(0, 5))
_read = st.tuples(
    st.just("read"), _ids, st.integers(-1, 12), st.one_of(st.none(), st.integers(0, 5))
)
_list = st.tuples(st.just("list"), st.integers(1, 4), st.one_of(st.none(), st.tuples(_times, _ids)))
_delete = st.tuples(st.just("delete"), _ids)
_expire = st.tuples(st.just("expire"), _times)
_BY_KIND = {
    "create": _create,
    "commit": _commit,
    "trim": _trim,
    "read": _read,
    "list": _list,
    "delete": _delete,
    "expire": _expire,
}
# Commits and reads dominate so that logs grow; deletes and expiry are rarer.
_KINDS = ["commit"] * 8 + ["read"] * 4 + ["trim", "list", "create", "delete", "expire"]
_ops = st.lists(
    st.sampled_from(_KINDS).flatmap(lambda kind: _BY_KIND[kind]), min_size=10, max_size=50
)
_SETUP = [("create", "a", 1.0, 3.0), ("create", "b", 1.0, 4.0), ("create", "c", 2.0, 5.0)]


async def _outcome(store: SessionStore, op: tuple[Any, ...], last_seq: dict[str, int]) -> object:
    """Run one op: its result, or the type of the ``StoreError`` it raised.

    ``last_seq`` is the reference store's log position per session, to build batches.
    """
    result: object = None
    try:
        match op:
            case ("create", sid, created, updated):
                await store.create(meta(sid, created_at=created, updated_at=updated), b"")
            case ("commit", sid, count, offset, turns, state, updated):
                first = last_seq.get(sid, 0) + 1 + offset
                await store.commit(
                    sid,
                    events=events(first, first + count - 1, session_id=sid),
                    turns=[
                        turn(t, session_id=sid, started_at=at, status="completed" if done else None)
                        for t, at, done in turns
                    ],
                    state=state,
                    updated_at=updated,
                )
            case ("trim", sid, keep):
                await store.trim_events(sid, keep)
            case ("read", sid, after, limit):
                result = (await store.read_events(sid, after, limit), await store.first_seq(sid))
            case ("list", limit, before):
                result = await store.list_sessions(limit=limit, before=before)
            case ("delete", sid):
                result = await store.delete(sid)
            case ("expire", before):
                result = sorted(await store.expire(before))
            case _:
                raise AssertionError(op)
    except StoreError:
        result = StoreError
    return result


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops)
def test_sqlite_behaves_like_memory(ops: list[tuple[Any, ...]]) -> None:
    async def both() -> tuple[list[object], list[object]]:
        memory, sqlite = MemoryStore(), SqliteStore(MEMORY_PATH)
        await sqlite.open()
        try:
            expected: list[object] = []
            got: list[object] = []
            last: dict[str, int] = {}
            for op in _SETUP + ops:
                # Both see the same batch, built from the reference's log position.
                expected.append(await _outcome(memory, op, last))
                got.append(await _outcome(sqlite, op, last))
                for sid in ("a", "b", "c"):
                    held = await memory.read_events(sid, -1)
                    if await memory.get(sid) is None:
                        last.pop(sid, None)
                    elif held:
                        last[sid] = held[-1].seq
            for sid in ("a", "b", "c"):
                expected.append((await memory.get(sid), await memory.list_turns(sid)))
                got.append((await sqlite.get(sid), await sqlite.list_turns(sid)))
            return expected, got
        finally:
            await sqlite.aclose()
            await memory.aclose()

    expected, got = asyncio.run(both())
    assert got == expected


# URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///voice-gateway.db", "voice-gateway.db"),
        ("sqlite:///data/sub/gw.db", "data/sub/gw.db"),
        ("sqlite:////var/lib/gw/x.db", "/var/lib/gw/x.db"),
        ("SQLITE:////x.db", "/x.db"),
        ("sqlite://", MEMORY_PATH),
        ("sqlite://:memory:", MEMORY_PATH),
        ("sqlite:///:memory:", MEMORY_PATH),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    store = store_from_url(url)
    assert isinstance(store, SqliteStore)
    assert store.path == path


def test_memory_url() -> None:
    assert isinstance(store_from_url("memory://"), MemoryStore)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://:hunter2@localhost:3306/0",
        "postgres://db/x",
        "",
        "voice.db",
        "sqlite:/x.db",
        "sqlite://host/x.db",
        "sqlite:///x.db?mode=ro",
        "memory://somewhere",
    ],
)
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(ValueError, match="GATEWAY_STORE") as info:
        store_from_url(url)
    message = str(info.value)
    assert "memory://" in message
    assert "sqlite:///" in message
    assert "hunter2" not in message


async def test_relative_url_opens_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_store("sqlite:///state/gw.db")
    try:
        await store.create(meta("s"), b"")
    finally:
        await store.aclose()
    assert (tmp_path / "state" / "gw.db").is_file()


async def test_in_memory_sqlite_url_works() -> None:
    store = await open_store("sqlite://")
    try:
        await store.create(meta("s"), b"x")
        await store.commit("s", events=events(1, 2))
        assert await store.read_events("s", 0) == events(1, 2)
    finally:
        await store.aclose()


# State pieces --------------------------------------------------------------------------

state_edits = st.lists(
    st.one_of(
        st.binary(max_size=40_000),  # anything
        st.tuples(st.just("append"), st.binary(max_size=9_000)),
        st.tuples(st.just("cut"), st.integers(min_value=0, max_value=20_000)),
        st.tuples(st.just("flip"), st.integers(min_value=0, max_value=40_000)),
        st.just("reopen"),
        st.just("fail"),
    ),
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits=state_edits)
def test_the_stored_state_is_always_the_last_committed_one(
    tmp_path: Path, edits: list[Any]
) -> None:
    """Only the pieces that changed are written: whatever the edits, a failed commit
    or a reopened store in between, the state read back is the last one committed."""

    async def play() -> None:
        path = tmp_path / f"pieces-{abs(hash(repr(edits)))}.db"
        path.unlink(missing_ok=True)
        store = SqliteStore(path)
        await store.open()
        try:
            current = b"\x00" * 10_000
            await store.create(meta("s"), current)
            seq = 0
            for edit in edits:
                if edit == "reopen":
                    await store.aclose()
                    store = SqliteStore(path)
                    await store.open()
                    continue
                if edit == "fail":  # a seq gap: refused, nothing of it stored
                    with pytest.raises(StoreError):
                        await store.commit("s", events=[event(seq + 5)], state=b"lost")
                    continue
                if isinstance(edit, bytes):
                    new = edit
                elif edit[0] == "append":
                    new = current + edit[1]
                elif edit[0] == "cut":
                    new = current[: edit[1]]
                else:
                    at = min(edit[1], max(len(current) - 1, 0))
                    new = current[:at] + b"\xff" + current[at + 1 :] if current else b"\xff"
                seq += 1
                await store.commit("s", events=[event(seq)], state=new)
                current = new
                got = await store.get("s")
                assert got is not None
                assert got.state == current
        finally:
            await store.aclose()
        async with opened(path) as reopened:
            got = await reopened.get("s")
            assert got is not None
            assert got.state == current

    asyncio.run(play())


def first_changed_piece(old: bytes, pieces: list[bytes]) -> int:
    """The rule ``_changed`` implements, piece by piece."""
    size = sqlite_module.STATE_PIECE
    for index, piece in enumerate(pieces):
        if old[index * size : (index + 1) * size] != piece:
            return index
    return len(pieces)


def changes(old: bytes) -> Iterator[bytes]:
    """``old`` edited next to every piece's and scan run's edge, cut there, grown, kept."""
    piece, run = sqlite_module.STATE_PIECE, sqlite_module._SCAN
    edges = {k * piece for k in range(len(old) // piece + 2)} | {k * run for k in range(4)}
    for at in sorted({max(0, e + d) for e in edges for d in (-1, 0, 1)}):
        yield old[:at] + b"\xff" + old[at + 1 :]
        yield old[:at]
    yield old + b"more"
    yield old


@pytest.mark.parametrize("length", [0, 1, 895, 896, 14_335, 14_336, 28_671, 40_000])
def test_the_first_changed_piece_is_found_wherever_the_change_is(length: int) -> None:
    old = bytes(i % 251 for i in range(length))
    for new in changes(old):
        pieces = sqlite_module._pieces(new)
        assert sqlite_module._changed(old, new) == first_changed_piece(old, pieces)


async def test_a_commit_in_flight_across_a_delete_and_create_is_not_remembered(
    tmp_path: Path,
) -> None:
    # A commit queued for the worker lands on the old session's rows; a delete and a
    # create of the same id queued behind it replace them. What the commit stored must
    # not be taken for what the new session holds, or its next snapshot would write
    # only a tail onto the new session's pieces.
    async with opened(tmp_path / "gw.db") as store:
        big = bytes(range(256)) * 400  # 100 KB: a commit that goes to the worker
        await store.create(meta("s"), b"{}")
        await store.commit("s", state=big)
        await asyncio.gather(
            store.list_sessions(limit=1),  # keeps the worker busy: the rest queue behind
            store.commit("s", state=big[:-5] + b"fresh"),
            store.delete("s"),
            store.create(meta("s"), b"{}"),
        )
        new = big[:-3] + b"new"
        await store.commit("s", state=new)
        got = await store.get("s")
        assert got is not None
        assert got.state == new


def block_until_idle(batches: Any) -> None:
    """Wait for the worker to be done, blocking the event loop meanwhile: the results
    it hands back cannot be taken until this returns."""
    deadline = time.monotonic() + 10
    while not batches.idle:
        assert time.monotonic() < deadline, "the worker did not finish"
        time.sleep(0.0005)


async def test_of_two_state_commits_in_flight_the_newest_is_remembered(
    tmp_path: Path,
) -> None:
    # A large commit runs on the worker; once the worker is idle again, and before the
    # commit's task has resumed, a small one of the same session runs inline and lands
    # second. The older commit's task, resuming last, must not take its state for what
    # the file holds: the next snapshot would then write only a tail onto the newer
    # state's pieces (found by review: 3,840 of 102,400 bytes read back).
    async with opened(tmp_path / "gw.db") as store:
        await store.create(meta("s"), b"{}")
        big = bytes(range(256)) * 400  # 100 KB: a commit that goes to the worker
        older = asyncio.ensure_future(store.commit("s", state=big))
        batches = store._batches
        for _ in range(100):  # until the commit is queued for the worker
            await asyncio.sleep(0)
            if not batches.idle:
                break
        assert not batches.idle
        block_until_idle(batches)
        assert not older.done()
        await store.commit("s", state=b"B" * 3584)  # inline, without yielding: it lands second
        await older
        final = big[:-1] + b"C"
        await store.commit("s", state=final)
        got = await store.get("s")
        assert got is not None
        assert got.state == final
        assert store._newest == {}  # nothing in flight: nothing kept


def wal_transactions(path: Path) -> list[list[int]]:
    """The pages each transaction in the write-ahead log wrote, in order (see the WAL
    format: a 32-byte header, then frames of a 24-byte header and one page; a frame
    with a non-zero database size ends its transaction)."""
    data = Path(f"{path}-wal").read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    transactions: list[list[int]] = []
    pages: list[int] = []
    for offset in range(32, len(data) - 23, 24 + page_size):
        page, size_after = struct.unpack(">II", data[offset : offset + 8])
        pages.append(page)
        if size_after:
            transactions.append(pages)
            pages = []
    return transactions


async def test_a_commit_writes_its_events_page_and_its_state_tail(tmp_path: Path) -> None:
    # What makes a commit cost: the pages it writes to the log, and later checkpoints.
    path = tmp_path / "gw.db"
    state = bytes(range(256)) * 10  # three pieces, in one page
    async with opened(path) as store:
        await store.create(meta("s"), b"{}")
        await store.commit("s", events=[event(1)], state=state, updated_at=1.0)
        assert raw(path, "PRAGMA wal_checkpoint(TRUNCATE)") == 0  # done: the log is empty

        await store.commit("s", events=[event(2)], state=state + b"more")
        await store.commit("s", events=[event(3)], updated_at=2.0)
        quiet, touched = wal_transactions(path)

        got = await store.get("s")
        assert got is not None
        assert (got.state, got.meta.updated_at) == (state + b"more", 2.0)
        assert [e.seq for e in await store.read_events("s", 0)] == [1, 2, 3]
    # One page of events and one of state pieces; not the session's row, nor an index
    # entry, nor overflow pages (which a rewrite frees and allocates again).
    assert len(quiet) == 2, quiet
    # The time moves the session's row and its entry in the updated_at index.
    assert len(touched) == 3, touched


async def test_a_version_2_database_continues_its_trimmed_log(tmp_path: Path) -> None:
    # Version 2 kept the last seq in the session's row at every commit; from 3 on it is a
    # floor that trims raise, so a log trimmed to nothing still continues where it was.
    path = tmp_path / "gw.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        sqlite_module.MIGRATIONS[0](conn)
        sqlite_module.MIGRATIONS[1](conn)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            "INSERT INTO sessions (session_id, token_hash, principal, created_at, updated_at, "
            "last_seq, state) VALUES ('old', 'h', NULL, 1.0, 2.0, 7, x'')"
        )
    async with opened(path) as store:
        with pytest.raises(StoreError):
            await store.commit("old", events=[event(1, session_id="old")])
        await store.commit("old", events=[event(8, session_id="old")])
        await store.trim_events("old", 0)
        with pytest.raises(StoreError):
            await store.commit("old", events=[event(1, session_id="old")])
        await store.commit("old", events=[event(9, session_id="old")])
        assert [e.seq for e in await store.read_events("old", 0)] == [9]
    assert raw(path, "PRAGMA user_version") == 3


async def test_a_grown_state_writes_only_its_changed_pieces(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    piece = sqlite_module.STATE_PIECE
    async with opened(path) as store:
        state = bytes(range(256)) * (20 * piece // 256)  # 20 pieces
        await store.create(meta("s"), b"{}")
        await store.commit("s", state=state)  # written whole: not known before
        before = raw(path, "SELECT count(*) FROM state_pieces")
        writes: list[int] = []
        original = sqlite_module._write_state

        def counting(conn: sqlite3.Connection, sid: str, write: Any) -> None:
            writes.append(len(write.tail))
            original(conn, sid, write)

        sqlite_module._write_state = counting  # type: ignore[assignment]
        try:
            await store.commit("s", events=[event(1)], state=state + b"more")
        finally:
            sqlite_module._write_state = original  # type: ignore[assignment]
        assert before == 20
        assert writes == [1]  # the last piece, which gained the new bytes
        got = await store.get("s")
        assert got is not None
        assert got.state == state + b"more"
