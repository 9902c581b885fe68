"""SQLite session store: one file, one connection, one worker thread, group commit.

Two connections to one file, in WAL mode with ``synchronous=NORMAL`` (a commit that
returned survives the process being killed; only an OS crash or power loss can drop
the last few):

- **On the event loop**, small writes and lookups (``create``, ``get``, a commit of
  at most :data:`INLINE_MAX_BYTES`, ``trim_events``, ``first_seq``, ``ping``) run
  inline, when nothing is queued for the worker. Such a call costs 30–100 µs: at
  ``synchronous=NORMAL`` a WAL commit writes to the OS page cache and never syncs.
  The three things that could make the loop wait are kept off it: this connection
  never checkpoints (``wal_autocheckpoint=0``: the worker does, every
  :data:`CHECKPOINT_EVERY` inline writes, with the fsyncs; calls made meanwhile
  queue for the worker, behind the checkpoint), never waits for a lock
  (``busy_timeout=0``: a busy database sends the call to the worker, which waits),
  and never takes a large call. Handing every call to a thread instead cost more
  than the SQL: about 1.3 CPU-ms a turn at 100 concurrent sessions (two thread
  wake-ups and a GIL hand-over per call), against about 1 for the SQL itself.
- **On a dedicated worker thread** (a single-worker executor), everything else:
  large commits, listings, replay reads, deletes, expiry, checkpoints, and every call
  made while calls are queued there, so that calls still run in the order they were
  made. Calls queued while the worker is busy run in one transaction (**group
  commit**), each inside its own ``SAVEPOINT``: a call that fails is rolled back alone
  and fails alone, the others go on. No call's result is handed back before the
  transaction's ``COMMIT`` returned; when the ``COMMIT`` (or the ``BEGIN``) fails,
  every call of the batch fails with that error, so nothing is ever reported stored
  that is not.

Hand-written because the ``sqlite3`` module has no async layer, and aiosqlite, the
well-kept one, sends every call to its thread, one transaction each. A private
in-memory database (:data:`MEMORY_PATH`) has one connection, on the worker.

Each :meth:`SqliteStore.commit` is atomic (events, turns, state and
``updated_at`` together). ``sqlite3`` errors come out as
:class:`~gateway.stores.base.StoreError`.

**One gateway process per file.** Two processes on one file would each hand out
the same ``seq`` numbers and deliver events the other never stored, so
:meth:`SqliteStore.open` takes an exclusive ``flock`` on ``<file>.lock`` (freed
by the OS when the process dies, even by SIGKILL) and refuses with
:class:`~gateway.errors.StoreLocked` when another process holds it. Several
processes need the Redis store.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import logging
import os
import sqlite3
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from gateway.stores.base import (
    SessionMeta,
    StoredEvent,
    StoredSession,
    StoreError,
    StoreLocked,
    TurnRecord,
    check_batch,
)

_T = TypeVar("_T")

log = logging.getLogger("gateway.stores.sqlite")

#: The most calls one transaction takes (what is queued beyond waits for the next).
MAX_BATCH = 256
#: A commit carrying more bytes than this (events and state) runs on the worker.
INLINE_MAX_BYTES = 64 * 1024
#: The state blob is stored in pieces of this many bytes (only changed ones are written):
#: small enough that a piece and its key fit in one cell of a 4 KiB page (SQLite keeps at
#: most about 1,000 bytes of a WITHOUT ROWID row in the page). A bigger piece spills into
#: overflow pages, which a rewrite frees and allocates again: an 8 KiB piece cost three
#: to five page writes where a small one costs part of one.
STATE_PIECE = 896
#: Pieces compared at once while looking for the first changed one.
_SCAN = 16 * STATE_PIECE
#: Bytes of stored states the store remembers (to write only the pieces that changed);
#: the least recently written go first, and their next snapshot is written whole.
STATE_CACHE_BYTES = 64 * 1024 * 1024
#: Inline writes between two checkpoints (which run on the worker thread): about
#: SQLite's own 1,000-page ``wal_autocheckpoint`` at a few pages a commit.
CHECKPOINT_EVERY = 250

MEMORY_PATH = ":memory:"
"""Pass as ``path`` for a private in-memory database (tests; nothing is durable)."""

BUSY_TIMEOUT_MS = 5000
_MIN_SQLITE = (3, 24, 0)  # upsert (ON CONFLICT DO UPDATE) and row values

_TURN_COLUMNS = (
    "session_id, turn_id, in_reply_to, user_text, status, text, spoken_text, reason, "
    "started_at, ended_at, first_token_ms, first_chunk_ms, total_ms"
)
_SESSION_COLUMNS = "session_id, token_hash, principal, created_at, updated_at"


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    """The initial schema."""
    conn.execute(
        """
        CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY NOT NULL,
            token_hash TEXT NOT NULL,
            principal TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_seq INTEGER NOT NULL DEFAULT 0,
            state BLOB NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX sessions_by_created ON sessions (created_at DESC, session_id DESC)")
    conn.execute("CREATE INDEX sessions_by_updated ON sessions (updated_at)")
    conn.execute(
        """
        CREATE TABLE turns (
            session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
            turn_id TEXT NOT NULL,
            in_reply_to TEXT,
            user_text TEXT,
            status TEXT,
            text TEXT NOT NULL,
            spoken_text TEXT,
            reason TEXT,
            started_at REAL NOT NULL,
            ended_at REAL,
            first_token_ms INTEGER,
            first_chunk_ms INTEGER,
            total_ms INTEGER,
            PRIMARY KEY (session_id, turn_id)
        )
        """
    )
    conn.execute("CREATE INDEX turns_by_start ON turns (session_id, started_at)")
    conn.execute(
        """
        CREATE TABLE events (
            session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            turn_id TEXT,
            data TEXT NOT NULL,
            PRIMARY KEY (session_id, seq)
        ) WITHOUT ROWID
        """
    )


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """The state blob out of the ``sessions`` row, in pieces of :data:`STATE_PIECE`
    bytes. In the row, every commit's ``UPDATE`` (``last_seq``, ``updated_at``)
    rewrote the whole record, the blob and its overflow pages included; and a long
    conversation's snapshot (150 KB at 300 turns) was written whole twice a turn,
    though only its end changes: the store's cost per turn grew with the
    conversation. Now a snapshot writes only the pieces that differ from the stored
    ones (see :class:`SqliteStore`)."""
    conn.execute(
        """
        CREATE TABLE state_pieces (
            session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
            piece INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (session_id, piece)
        ) WITHOUT ROWID
        """
    )
    rows = conn.execute("SELECT session_id, state FROM sessions").fetchall()
    conn.executemany(
        "INSERT INTO state_pieces (session_id, piece, data) VALUES (?, ?, ?)",
        [
            (session_id, index, piece)
            for session_id, state in rows
            for index, piece in enumerate(_pieces(bytes(state)))
        ],
    )
    conn.execute("UPDATE sessions SET state = x''")  # the column stays, empty and unread


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """``sessions.last_seq`` becomes a floor, written by trims only: a session's last
    ``seq`` is its newest event's, or the floor when trims left none. Before, every
    commit rewrote the session's row (``last_seq``, ``updated_at``), and with it an
    entry of the ``updated_at`` index: two of a commit's three or four page writes.
    No data changes (the stored ``last_seq`` is still right); the version is raised so
    that an older gateway, which trusts the column, refuses the file."""
    del conn


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _migrate_0_to_1,
    _migrate_1_to_2,
    _migrate_2_to_3,
)
"""``MIGRATIONS[v]`` moves the schema from ``user_version`` v to v + 1."""

SCHEMA_VERSION = len(MIGRATIONS)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error; inside a batch's
    transaction (see :class:`_Batches`) a no-op: the call's savepoint does that."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found."""
    with _transaction(conn):
        found: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"database schema version {found} is newer than this gateway "
                f"supports ({SCHEMA_VERSION})"
            )
        for version in range(found, SCHEMA_VERSION):
            MIGRATIONS[version](conn)
        if found != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
    return found


def _connect(path: str) -> sqlite3.Connection:
    """Open and configure the connection (runs on the worker thread)."""
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        raise StoreError(
            f"SQLite {sqlite3.sqlite_version} is too old; "
            f"{'.'.join(map(str, _MIN_SQLITE))} or newer is needed"
        )
    if path != MEMORY_PATH:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        conn.execute("PRAGMA foreign_keys = ON")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if path != MEMORY_PATH and str(mode).lower() != "wal":
            raise StoreError(f"cannot switch {path} to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_inline(path: str) -> sqlite3.Connection:
    """The event loop's connection (opened on the loop, once the worker migrated the
    schema): never waits for a lock, never checkpoints."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    except BaseException:
        conn.close()
        raise
    return conn


def _busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _pieces(state: bytes) -> list[bytes]:
    """``state`` cut into :data:`STATE_PIECE`-byte pieces (one empty piece for b"")."""
    return [state[i : i + STATE_PIECE] for i in range(0, len(state), STATE_PIECE)] or [b""]


def _piece_count(size: int) -> int:
    """How many pieces a state of ``size`` bytes is stored in (one, empty, for b"")."""
    return max(1, -(-size // STATE_PIECE))


def _changed(old: bytes | None, new: bytes) -> int:
    """The index of the first piece of ``new`` that differs from the stored state
    ``old`` (0, all of them, when ``old`` is unknown)."""
    if old is None:
        return 0
    # ``startswith`` of a memoryview is a memcmp with no copy (slicing copies, and
    # memoryviews compare byte by byte): first in runs of pieces, then piece by piece
    # inside the first run that differs.
    view, start = memoryview(old), 0
    common = min(len(old), len(new))
    while start + _SCAN <= common and new.startswith(view[start : start + _SCAN], start):
        start += _SCAN
    count = _piece_count(len(new))
    index = min(start // STATE_PIECE, count)
    while index < count:
        at = index * STATE_PIECE
        size = min(STATE_PIECE, len(new) - at)
        if min(STATE_PIECE, max(0, len(old) - at)) != size:
            break
        if not new.startswith(view[at : at + size], at):
            break
        index += 1
    return index


@dataclass(frozen=True, slots=True)
class _StateWrite:
    """What a snapshot writes: pieces ``first`` onwards (``tail``) of its ``count``,
    and how many pieces were stored before (``None``: not known)."""

    first: int
    tail: tuple[bytes, ...]
    count: int
    stored: int | None

    @classmethod
    def of(cls, state: bytes, old: bytes | None) -> _StateWrite:
        """The write that turns the stored ``old`` (``None``: not known) into ``state``;
        only the pieces from the first that changed are cut out."""
        first, count = _changed(old, state), _piece_count(len(state))
        tail = tuple(state[i * STATE_PIECE : (i + 1) * STATE_PIECE] for i in range(first, count))
        return cls(first, tail, count, None if old is None else _piece_count(len(old)))

    @property
    def size(self) -> int:
        """Bytes written."""
        return sum(map(len, self.tail))


def _write_state(conn: sqlite3.Connection, session_id: str, write: _StateWrite) -> None:
    """Store the changed pieces, and drop stored pieces past the last (if there may
    be some)."""
    if write.tail:
        conn.executemany(
            "INSERT OR REPLACE INTO state_pieces (session_id, piece, data) VALUES (?, ?, ?)",
            [(session_id, write.first + i, piece) for i, piece in enumerate(write.tail)],
        )
    if write.stored is None or write.stored > write.count:
        conn.execute(
            "DELETE FROM state_pieces WHERE session_id = ? AND piece >= ?",
            (session_id, write.count),
        )


#: The highest ``seq`` committed for a session: its newest event, or, once trims took
#: them all, the floor ``sessions.last_seq`` (see :func:`_migrate_2_to_3`).
_LAST_SEQ = (
    "SELECT last_seq, coalesce((SELECT max(seq) FROM events WHERE session_id = ?1), 0) "
    "FROM sessions WHERE session_id = ?1"
)


def _checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL back into the database (on the worker; writers go on meanwhile)."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class _Busy(Exception):
    """The inline connection found the database locked: the worker must wait for it."""


def _discard(connecting: Future[sqlite3.Connection]) -> None:
    """Close the connection ``connecting`` produced, if it produced one."""
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().close()


def _meta(row: tuple[Any, ...]) -> SessionMeta:
    return SessionMeta(
        session_id=row[0],
        token_hash=row[1],
        principal=row[2],
        created_at=row[3],
        updated_at=row[4],
    )


def _turn(row: tuple[Any, ...]) -> TurnRecord:
    return TurnRecord(*row)


def _turn_row(turn: TurnRecord) -> tuple[Any, ...]:
    return (
        turn.session_id,
        turn.turn_id,
        turn.in_reply_to,
        turn.user_text,
        turn.status,
        turn.text,
        turn.spoken_text,
        turn.reason,
        turn.started_at,
        turn.ended_at,
        turn.first_token_ms,
        turn.first_chunk_ms,
        turn.total_ms,
    )


_Call = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]


class _Batches:
    """The calls waiting for the worker thread, and the one drain that runs them.

    The event loop appends; the worker takes batches. ``_draining`` says a drain is
    submitted or running; it and the queue change together under ``_lock``, so a
    call is never left queued with no drain to run it.
    """

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor
        self._queue: deque[_Call] = deque()
        self._lock = threading.Lock()
        self._draining = False

    def submit(self, fn: Callable[[sqlite3.Connection], _T]) -> asyncio.Future[_T]:
        """Queue ``fn(connection)``; the future resolves once its batch committed."""
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._queue.append((fn, future))
            if self._draining:
                return future
            self._draining = True
        self._executor.submit(self._drain).add_done_callback(
            partial(_log_failure, logging.ERROR, "the SQLite worker stopped: %r")
        )
        return future

    @property
    def idle(self) -> bool:
        """Nothing is queued or running (read on the event loop, which alone queues)."""
        return not self._draining

    def _take(self) -> list[_Call]:
        with self._lock:
            if not self._queue:
                self._draining = False
                return []
            count = min(len(self._queue), MAX_BATCH)
            return [self._queue.popleft() for _ in range(count)]

    def _drain(self) -> None:
        """Run batches until the queue is empty (on the worker thread)."""
        while batch := self._take():
            outcomes: list[tuple[bool, Any]] = []
            try:
                outcomes = _run_batch(self._conn, [fn for fn, _ in batch])
            except BaseException as exc:
                failure = exc if isinstance(exc, Exception) else StoreError("SQLite worker stopped")
                outcomes = [(False, failure)] * len(batch)
                if not isinstance(exc, Exception):
                    _resolve(batch, outcomes)
                    raise
            _resolve(batch, outcomes)


def _run_batch(
    conn: sqlite3.Connection, calls: list[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]]:
    """Run ``calls`` in one transaction, each in a savepoint; (ok, result or error)
    per call. A failed ``BEGIN`` or ``COMMIT`` fails every call."""
    outcomes: list[tuple[bool, Any]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        return [(False, exc)] * len(calls)
    try:
        for fn in calls:
            conn.execute("SAVEPOINT call")
            try:
                result = fn(conn)
            except Exception as exc:  # noqa: BLE001 -- the call fails alone
                conn.execute("ROLLBACK TO call")
                conn.execute("RELEASE call")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE call")
                outcomes.append((True, result))
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if not isinstance(exc, sqlite3.Error):
            raise
        return [(False, exc)] * len(calls)
    return outcomes


def _resolve(batch: list[_Call], outcomes: list[tuple[bool, Any]]) -> None:
    """Hand the outcomes to their futures, with one wake-up of each loop."""
    loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
        loops.setdefault(future.get_loop(), []).append((future, ok, value))
    for loop, results in loops.items():
        try:
            loop.call_soon_threadsafe(_set_all, results)
        except RuntimeError:
            continue  # that loop is closed: nobody waits for these any more


def _set_all(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _log_failure(level: int, message: str, done: Future[None]) -> None:
    """Log what a job submitted to the worker raised (it is not awaited)."""
    if not done.cancelled() and (exc := done.exception()) is not None:
        log.log(level, message, exc)


class SqliteStore:
    """A :class:`~gateway.stores.base.SessionStore` in one SQLite file.

    Construct with the file's path (no I/O), then ``await store.open()``, which
    creates missing parent directories and the file, sets the pragmas and runs the
    migrations; ``await store.aclose()`` lets queued calls finish, closes the
    connection and stops the thread. A store cannot be reopened after ``aclose``.
    ``path`` may be :data:`MEMORY_PATH` for a throwaway in-memory database.

    Semantics are those of :class:`~gateway.stores.memory.MemoryStore` (seq starts
    at 1 and must continue the highest ever committed; turns list by
    ``started_at``, then first insertion; ``updated_at=None`` keeps the old value).
    """

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._batches: _Batches | None = None
        #: The event loop's connection (``None`` for MEMORY_PATH, or once closed).
        self._inline: sqlite3.Connection | None = None
        self._inline_writes = 0
        self._checkpointing: Future[None] | None = None
        #: The state this process stored last per session, while no write of it is in
        #: flight (an LRU of STATE_CACHE_BYTES; on a miss a snapshot is written whole).
        #: Only this process writes the file (the flock), so it is what the file holds.
        self._stored: OrderedDict[str, bytes] = OrderedDict()
        self._stored_bytes = 0
        #: Per session, the token of the newest state commit in flight. A commit
        #: remembers its state only if it is still the newest when it lands: two in
        #: flight land in the order they were made (inline only when the worker is
        #: idle), but their tasks may resume in the other order. ``create`` and
        #: ``delete`` drop the entry, so a commit in flight across them (its rows gone,
        #: or another session's of the same id) remembers nothing.
        self._newest: dict[str, int] = {}
        self._tokens = itertools.count()
        #: Counts expiries, which find their sessions in the file: a state commit in
        #: flight across one remembers nothing.
        self._resets = 0
        self._closed = False
        self._lock_fd: int | None = None
        self._lifecycle = asyncio.Lock()  # open and aclose run one at a time

    @property
    def path(self) -> str:
        """The database file as given."""
        return self._path

    async def open(self) -> None:
        """Create/open the database and migrate it; a no-op if already open."""
        async with self._lifecycle:
            await self._open()

    async def _open(self) -> None:
        if self._closed:
            raise StoreError("SQLite store is closed")
        if self._executor is not None:
            return
        if self._path != MEMORY_PATH:
            self._lock_fd = _lock_file(self._path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        connecting = executor.submit(_connect, self._path)
        try:
            self._conn = await asyncio.wrap_future(connecting)
        except BaseException as e:
            # Queued after _connect on the same thread: closes a connection nobody will use.
            executor.submit(_discard, connecting)
            # After an error _connect is over and the join is immediate; not so if cancelled.
            executor.shutdown(wait=isinstance(e, Exception))
            self._unlock()
            if isinstance(e, sqlite3.Error | OSError | StoreError):
                raise StoreError(f"cannot open SQLite store at {self._path!r}: {e}") from e
            raise
        if self._path != MEMORY_PATH:
            try:
                self._inline = _connect_inline(self._path)
            except sqlite3.Error as e:
                executor.submit(self._conn.close)
                executor.shutdown(wait=True)
                self._conn = None
                self._unlock()
                raise StoreError(f"cannot open SQLite store at {self._path!r}: {e}") from e
        self._executor = executor
        self._batches = _Batches(self._conn, executor)

    async def aclose(self) -> None:
        """Wait for queued calls, close the connection, stop the thread. Idempotent."""
        async with self._lifecycle:
            await self._aclose()

    async def _aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        executor, self._executor = self._executor, None
        conn, self._conn = self._conn, None
        self._batches = None
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()  # its calls ran to completion when they were made
        if executor is None or conn is None:
            self._unlock()
            return
        # Queued behind the drain of every call already made, so those finish first
        # (a drain runs until the queue is empty); shielded so a
        # cancelled aclose still closes the connection.
        closing = executor.submit(conn.close)
        try:
            await asyncio.shield(asyncio.wrap_future(closing))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        executor.shutdown(wait=True)  # the worker is idle: joining it is immediate
        self._unlock()

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    async def _run(self, fn: Callable[[sqlite3.Connection], _T], *, inline: bool = False) -> _T:
        """Run ``fn(connection)``: on the event loop's connection when ``inline`` and
        nothing waits for the worker (see the module docstring), else on the worker
        thread, in its next batch."""
        batches = self._batches
        if batches is None:
            state = "closed" if self._closed else "not open (await open() first)"
            raise StoreError(f"SQLite store {self._path!r} is {state}")
        try:
            if inline and self._inline is not None and batches.idle and not self._checkpoint_runs:
                try:
                    return self._run_inline(self._inline, fn)
                except _Busy:
                    pass  # locked by another connection: the worker waits for it
            return await batches.submit(fn)
        except sqlite3.Error as e:
            raise StoreError(f"SQLite store {self._path!r}: {e}") from e

    def _run_inline(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """``fn`` in its own transaction on the event loop's connection."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            if _busy(e):
                raise _Busy from e
            raise
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._inline_writes += 1
        if self._inline_writes >= CHECKPOINT_EVERY:
            self._checkpoint()
        return result

    @property
    def _checkpoint_runs(self) -> bool:
        running = self._checkpointing
        return running is not None and not running.done()

    def _checkpoint(self) -> None:
        """Have the worker checkpoint the WAL, unless it is doing so already. Until it
        is done, calls go to the worker (queued behind it): with no write meanwhile the
        checkpoint covers the whole log, and the next write starts the log afresh."""
        executor, conn = self._executor, self._conn
        if executor is None or conn is None or self._checkpoint_runs:
            return
        self._inline_writes = 0
        # Kept (and awaited by aclose through the executor's order); failures logged.
        self._checkpointing = executor.submit(_checkpoint, conn)
        self._checkpointing.add_done_callback(
            partial(_log_failure, logging.WARNING, "SQLite checkpoint failed (retried later): %s")
        )

    def _remember(self, session_id: str, state: bytes | None) -> None:
        """``state`` is what is stored for the session now (``None``: not known)."""
        old = self._stored.pop(session_id, None)
        if old is not None:
            self._stored_bytes -= len(old)
        if state is None:
            return
        self._stored[session_id] = state
        self._stored_bytes += len(state)
        while self._stored_bytes > STATE_CACHE_BYTES and self._stored:
            _, dropped = self._stored.popitem(last=False)
            self._stored_bytes -= len(dropped)

    def _landed(self, session_id: str, token: int) -> bool:
        """The state commit ``token`` is over: ``True`` if it was the session's newest
        (so what it wrote is what the file holds, if it succeeded)."""
        if self._newest.get(session_id) != token:
            return False
        del self._newest[session_id]
        return True

    async def create(self, meta: SessionMeta, state: bytes) -> None:
        # Not remembered: an idle session would hold its state twice; its first
        # snapshot is written whole (it is small then).
        self._newest.pop(meta.session_id, None)
        self._remember(meta.session_id, None)
        write = _StateWrite.of(bytes(state), None)
        await self._run(partial(_create, meta=meta, state=write), inline=True)

    async def get(self, session_id: str) -> StoredSession | None:
        # Not remembered: a commit of this session may be in flight and land first.
        return await self._run(partial(_get, session_id=session_id), inline=True)

    async def commit(
        self,
        session_id: str,
        *,
        events: Sequence[StoredEvent] = (),
        turns: Sequence[TurnRecord] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
    ) -> None:
        write: _StateWrite | None = None
        size = sum(len(e.data) for e in events)
        size += sum(len(t.text) + len(t.user_text or "") for t in turns)
        token = -1
        if state is not None:
            state = bytes(state)
            write = _StateWrite.of(state, self._stored.get(session_id))
            size += write.size
            # Until this commit is known to be stored, what is stored is not known.
            self._remember(session_id, None)
            token = self._newest[session_id] = next(self._tokens)
        resets = self._resets
        try:
            await self._run(
                partial(
                    _commit,
                    session_id=session_id,
                    events=tuple(events),
                    turns=tuple(turns),
                    state=write,
                    updated_at=updated_at,
                ),
                inline=size <= INLINE_MAX_BYTES,
            )
        except BaseException:
            if state is not None:
                self._landed(session_id, token)
            raise
        if state is not None and self._landed(session_id, token) and self._resets == resets:
            self._remember(session_id, state)

    async def read_events(
        self, session_id: str, after_seq: int, limit: int | None = None
    ) -> list[StoredEvent]:
        if limit is not None and limit <= 0:
            return []
        return await self._run(
            partial(_read_events, session_id=session_id, after_seq=after_seq, limit=limit)
        )

    async def first_seq(self, session_id: str) -> int | None:
        return await self._run(partial(_first_seq, session_id=session_id), inline=True)

    async def trim_events(self, session_id: str, keep_last: int) -> None:
        """Drop all but the newest ``keep_last`` events; ``ValueError`` if negative."""
        if keep_last < 0:
            raise ValueError("keep_last must not be negative")
        await self._run(
            partial(_trim_events, session_id=session_id, keep_last=keep_last), inline=True
        )

    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        return await self._run(partial(_list_turns, session_id=session_id))

    async def list_sessions(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        principal: str | None = None,
    ) -> list[SessionMeta]:
        if limit <= 0:
            return []
        return await self._run(
            partial(_list_sessions, limit=limit, before=before, principal=principal)
        )

    async def delete(self, session_id: str) -> bool:
        self._newest.pop(session_id, None)
        self._remember(session_id, None)
        return await self._run(partial(_delete, session_id=session_id))

    async def expire(self, idle_before: float) -> list[str]:
        self._resets += 1
        expired = await self._run(partial(_expire, idle_before=idle_before))
        for session_id in expired:
            self._remember(session_id, None)
        return expired

    async def streaming_sessions(self) -> list[str]:
        return await self._run(_streaming_sessions)

    async def ping(self) -> None:
        await self._run(_ping, inline=True)


# The functions below run on the worker thread, with the store's connection.


def _create(conn: sqlite3.Connection, *, meta: SessionMeta, state: _StateWrite) -> None:
    try:
        conn.execute(
            f"INSERT INTO sessions ({_SESSION_COLUMNS}, state) VALUES (?, ?, ?, ?, ?, x'')",
            (meta.session_id, meta.token_hash, meta.principal, meta.created_at, meta.updated_at),
        )
    except sqlite3.IntegrityError as e:
        raise StoreError(f"session {meta.session_id!r} already exists") from e
    _write_state(conn, meta.session_id, state)


def _get(conn: sqlite3.Connection, *, session_id: str) -> StoredSession | None:
    row = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    if row is None:
        return None
    pieces = conn.execute(
        "SELECT data FROM state_pieces WHERE session_id = ? ORDER BY piece", (session_id,)
    ).fetchall()
    return StoredSession(meta=_meta(row), state=b"".join(bytes(p[0]) for p in pieces))


def _commit(
    conn: sqlite3.Connection,
    *,
    session_id: str,
    events: tuple[StoredEvent, ...],
    turns: tuple[TurnRecord, ...],
    state: _StateWrite | None,
    updated_at: float | None,
) -> None:
    with _transaction(conn):
        row = conn.execute(_LAST_SEQ, (session_id,)).fetchone()
        if row is None:
            return
        last_seq: int = max(row)
        check_batch(session_id, last_seq, events, turns)
        if events:
            conn.executemany(
                "INSERT INTO events (session_id, seq, type, turn_id, data) VALUES (?, ?, ?, ?, ?)",
                [(session_id, e.seq, e.type, e.turn_id, e.data) for e in events],
            )
        if turns:
            conn.executemany(
                f"INSERT INTO turns ({_TURN_COLUMNS}) VALUES ({', '.join('?' * 13)}) "
                "ON CONFLICT (session_id, turn_id) DO UPDATE SET "
                "in_reply_to = excluded.in_reply_to, user_text = excluded.user_text, "
                "status = excluded.status, text = excluded.text, "
                "spoken_text = excluded.spoken_text, reason = excluded.reason, "
                "started_at = excluded.started_at, ended_at = excluded.ended_at, "
                "first_token_ms = excluded.first_token_ms, "
                "first_chunk_ms = excluded.first_chunk_ms, total_ms = excluded.total_ms",
                [_turn_row(turn) for turn in turns],
            )
        if updated_at is not None:
            conn.execute(
                "UPDATE sessions SET updated_at = ? WHERE session_id = ?", (updated_at, session_id)
            )
        if state is not None:
            _write_state(conn, session_id, state)


def _read_events(
    conn: sqlite3.Connection, *, session_id: str, after_seq: int, limit: int | None
) -> list[StoredEvent]:
    rows = conn.execute(
        "SELECT seq, type, turn_id, data FROM events WHERE session_id = ? AND seq > ? "
        "ORDER BY seq LIMIT ?",
        (session_id, after_seq, -1 if limit is None else limit),
    ).fetchall()
    return [StoredEvent(seq=r[0], type=r[1], turn_id=r[2], data=r[3]) for r in rows]


def _first_seq(conn: sqlite3.Connection, *, session_id: str) -> int | None:
    row = conn.execute("SELECT min(seq) FROM events WHERE session_id = ?", (session_id,)).fetchone()
    first: int | None = row[0]
    return first


def _trim_events(conn: sqlite3.Connection, *, session_id: str, keep_last: int) -> None:
    with _transaction(conn):
        row = conn.execute(_LAST_SEQ, (session_id,)).fetchone()
        if row is None:
            return
        last_seq: int = max(row)
        # The floor first: with every event trimmed away, it alone says where seq is.
        conn.execute(
            "UPDATE sessions SET last_seq = ? WHERE session_id = ? AND last_seq < ?",
            (last_seq, session_id, last_seq),
        )
        conn.execute(
            "DELETE FROM events WHERE session_id = ? AND seq <= ?",
            (session_id, last_seq - keep_last),
        )


def _list_turns(conn: sqlite3.Connection, *, session_id: str) -> list[TurnRecord]:
    rows = conn.execute(
        f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = ? ORDER BY started_at, rowid",
        (session_id,),
    ).fetchall()
    return [_turn(row) for row in rows]


def _list_sessions(
    conn: sqlite3.Connection,
    *,
    limit: int,
    before: tuple[float, str] | None,
    principal: str | None,
) -> list[SessionMeta]:
    where: list[str] = []
    params: list[object] = []
    if before is not None:
        where.append("(created_at, session_id) < (?, ?)")
        params += [before[0], before[1]]
    if principal is not None:
        where.append("principal = ?")
        params.append(principal)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    rows = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions {clause}"
        "ORDER BY created_at DESC, session_id DESC LIMIT ?",
        (*params, limit),
    )
    return [_meta(row) for row in rows.fetchall()]


def _delete(conn: sqlite3.Connection, *, session_id: str) -> bool:
    cursor = conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
    return cursor.rowcount > 0


def _expire(conn: sqlite3.Connection, *, idle_before: float) -> list[str]:
    with _transaction(conn):
        rows = conn.execute(
            "SELECT session_id FROM sessions WHERE updated_at < ?", (idle_before,)
        ).fetchall()
        if rows:
            conn.execute("DELETE FROM sessions WHERE updated_at < ?", (idle_before,))
    return [row[0] for row in rows]


def _lock_file(path: str) -> int:
    """Hold ``<path>.lock`` exclusively for this process; ``StoreLocked`` if taken."""
    lock_path = f"{path}.lock"
    try:
        Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise StoreError(f"cannot open SQLite store at {path!r}: its lock file: {e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise StoreLocked(
            f"another gateway process is using the SQLite store {os.path.abspath(path)!r} "
            "(SQLite allows one gateway process per file). Stop it, give this process its "
            "own file, or use the Redis store (GATEWAY_STORE=redis://...) to run several "
            "processes."
        ) from e
    return fd


def _streaming_sessions(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT DISTINCT session_id FROM turns WHERE status IS NULL OR status = 'streaming'"
    ).fetchall()
    return [row[0] for row in rows]


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1 FROM sessions LIMIT 1").fetchall()
