"""The session store interface, shared by every backend.

A store keeps, per session: its metadata (id, hashed resume token, timestamps), an
opaque versioned state blob (what the session core needs to come back after a
restart: history, counters, the open turn), the turns with their status and
timings, and the event log (what was sent, by ``seq``), which is the source of
truth for replay. The log is shaped as append / read-since / trim so that a Redis
Streams backend can serve it across instances.

Writes come in one :meth:`SessionStore.commit` per batch, applied atomically, so
a crash never leaves events without the state that goes with them. Backends must
not block the event loop (SQLite runs in its own thread).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.core.records import TurnRecord
from gateway.core.replay import LoggedEvent
from gateway.errors import Fenced, StoreError, StoreLocked

#: One server event as it was sent: native JSON text, with its ``seq``.
StoredEvent = LoggedEvent

__all__ = [
    "Fenced",
    "SessionMeta",
    "SessionStore",
    "StoreError",
    "StoreLocked",
    "StoredEvent",
    "StoredSession",
    "TurnRecord",
]


@dataclass(frozen=True, slots=True)
class SessionMeta:
    """What lists and looks up a session; times are Unix seconds."""

    session_id: str
    token_hash: str
    principal: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session as loaded: metadata and the state blob."""

    meta: SessionMeta
    state: bytes


class SessionStore(Protocol):
    """Durable sessions. Every method may raise :class:`StoreError`."""

    async def create(self, meta: SessionMeta, state: bytes) -> None:
        """Add a new session; raises ``StoreError`` if the id exists."""
        ...

    async def get(self, session_id: str) -> StoredSession | None:
        """The session, or ``None`` if unknown (or deleted, or expired)."""
        ...

    async def commit(
        self,
        session_id: str,
        *,
        events: Sequence[StoredEvent] = (),
        turns: Sequence[TurnRecord] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
    ) -> None:
        """Atomically append ``events`` (seq order, no gaps), upsert ``turns`` and
        replace the state; a no-op for an unknown session."""
        ...

    async def read_events(
        self, session_id: str, after_seq: int, limit: int | None = None
    ) -> list[StoredEvent]:
        """Events with ``seq > after_seq`` in order (at most ``limit``)."""
        ...

    async def first_seq(self, session_id: str) -> int | None:
        """The oldest ``seq`` still held, ``None`` when the log is empty."""
        ...

    async def trim_events(self, session_id: str, keep_last: int) -> None:
        """Drop all but the newest ``keep_last`` events of the session."""
        ...

    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        """The session's turns, oldest first."""
        ...

    async def list_sessions(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        principal: str | None = None,
    ) -> list[SessionMeta]:
        """Sessions newest first (by ``created_at``, then id), strictly older than
        the ``(created_at, session_id)`` cursor ``before`` when given, and only
        those of ``principal`` when given."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Remove the session with its turns and events; ``False`` if unknown."""
        ...

    async def expire(self, idle_before: float) -> list[str]:
        """Delete every session whose ``updated_at`` is older than ``idle_before``;
        returns their ids."""
        ...

    async def streaming_sessions(self) -> list[str]:
        """Ids of the sessions with a turn still ``streaming`` (left open by a crash
        when no process runs them)."""
        ...

    async def ping(self) -> None:
        """Raise ``StoreError`` unless the store is reachable and usable."""
        ...

    async def aclose(self) -> None:
        """Flush and release connections and threads."""
        ...


def check_batch(
    session_id: str, last_seq: int, events: Sequence[StoredEvent], turns: Sequence[TurnRecord]
) -> None:
    """Raise ``StoreError`` unless ``events`` continue ``last_seq`` with no gap or repeat
    and every turn belongs to ``session_id``. Shared by the backends."""
    for offset, event in enumerate(events):
        expected = last_seq + 1 + offset
        if event.seq != expected:
            raise StoreError(
                f"session {session_id!r}: event seq {event.seq} does not continue the log "
                f"(expected {expected})"
            )
    for turn in turns:
        if turn.session_id != session_id:
            raise StoreError(
                f"turn {turn.turn_id!r} belongs to session {turn.session_id!r}, not {session_id!r}"
            )
