"""In-process session store: plain dicts, no I/O, gone with the process.

For tests, development and single-instance deployments that do not need sessions
to survive a restart. Every stored value is immutable (frozen dataclasses, bytes),
so nothing handed in or out can alias the store's own data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from gateway.stores.base import (
    SessionMeta,
    StoredEvent,
    StoredSession,
    StoreError,
    TurnRecord,
    check_batch,
)


@dataclass(slots=True)
class _Entry:
    """One session's data; ``events`` hold consecutive seqs ending at ``last_seq``."""

    meta: SessionMeta
    state: bytes
    last_seq: int = 0
    events: list[StoredEvent] = field(default_factory=list)
    turns: dict[str, TurnRecord] = field(default_factory=dict)


class MemoryStore:
    """A :class:`~gateway.stores.base.SessionStore` held in dicts.

    Semantics shared with every backend (the contract tests pin them): a new
    session's log starts at ``seq`` 1 and each batch must continue the highest
    ``seq`` ever committed (trimming does not reset it); turns must carry the
    commit's ``session_id``; ``updated_at=None`` leaves the timestamp alone; turns
    list by ``started_at``, then first insertion. After :meth:`aclose` every method
    raises ``StoreError``.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, _Entry] = {}
        self._closed = False

    async def open(self) -> None:
        """Nothing to open; here so every backend opens the same way."""
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory store is closed")

    async def create(self, meta: SessionMeta, state: bytes) -> None:
        self._check_open()
        if meta.session_id in self._sessions:
            raise StoreError(f"session {meta.session_id!r} already exists")
        self._sessions[meta.session_id] = _Entry(meta=meta, state=bytes(state))

    async def get(self, session_id: str) -> StoredSession | None:
        self._check_open()
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        return StoredSession(meta=entry.meta, state=entry.state)

    async def commit(
        self,
        session_id: str,
        *,
        events: Sequence[StoredEvent] = (),
        turns: Sequence[TurnRecord] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
    ) -> None:
        self._check_open()
        entry = self._sessions.get(session_id)
        if entry is None:
            return
        # Validate everything before the first write: the batch applies whole or not at all.
        check_batch(session_id, entry.last_seq, events, turns)
        entry.events.extend(events)
        entry.last_seq += len(events)
        for turn in turns:
            entry.turns[turn.turn_id] = turn
        if state is not None:
            entry.state = bytes(state)
        if updated_at is not None:
            entry.meta = replace(entry.meta, updated_at=updated_at)

    async def read_events(
        self, session_id: str, after_seq: int, limit: int | None = None
    ) -> list[StoredEvent]:
        self._check_open()
        entry = self._sessions.get(session_id)
        if entry is None or not entry.events or (limit is not None and limit <= 0):
            return []
        start = max(0, after_seq + 1 - entry.events[0].seq)
        stop = None if limit is None else start + limit
        return entry.events[start:stop]

    async def first_seq(self, session_id: str) -> int | None:
        self._check_open()
        entry = self._sessions.get(session_id)
        if entry is None or not entry.events:
            return None
        return entry.events[0].seq

    async def trim_events(self, session_id: str, keep_last: int) -> None:
        """Drop all but the newest ``keep_last`` events; ``ValueError`` if negative."""
        if keep_last < 0:
            raise ValueError("keep_last must not be negative")
        self._check_open()
        entry = self._sessions.get(session_id)
        if entry is None:
            return
        drop = len(entry.events) - keep_last
        if drop > 0:
            del entry.events[:drop]

    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        self._check_open()
        entry = self._sessions.get(session_id)
        if entry is None:
            return []
        return sorted(entry.turns.values(), key=lambda turn: turn.started_at)

    async def list_sessions(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        principal: str | None = None,
    ) -> list[SessionMeta]:
        self._check_open()
        if limit <= 0:
            return []
        metas = (entry.meta for entry in self._sessions.values())
        if principal is not None:
            metas = (m for m in metas if m.principal == principal)
        if before is not None:
            metas = (m for m in metas if (m.created_at, m.session_id) < before)
        ordered = sorted(metas, key=lambda m: (m.created_at, m.session_id), reverse=True)
        return ordered[:limit]

    async def delete(self, session_id: str) -> bool:
        self._check_open()
        return self._sessions.pop(session_id, None) is not None

    async def expire(self, idle_before: float) -> list[str]:
        self._check_open()
        idle = [sid for sid, e in self._sessions.items() if e.meta.updated_at < idle_before]
        for session_id in idle:
            del self._sessions[session_id]
        return idle

    async def streaming_sessions(self) -> list[str]:
        self._check_open()
        return [
            session_id
            for session_id, entry in self._sessions.items()
            if any(turn.status in (None, "streaming") for turn in entry.turns.values())
        ]

    async def ping(self) -> None:
        self._check_open()

    async def aclose(self) -> None:
        """Drop every session; later calls raise ``StoreError``. Idempotent."""
        self._closed = True
        self._sessions.clear()
