"""A store that hands every call to another store: the base of the store wrappers.

The gateway wraps its store for several concerns at once (budgets, telemetry, lease
fencing); each wrapper overrides only the calls its concern changes and inherits
plain delegation for the rest, so a method added to
:class:`~gateway.stores.base.SessionStore` is added here once.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.stores.base import SessionMeta, SessionStore, StoredEvent, StoredSession, TurnRecord


class StoreWrapper:
    """Delegates every :class:`SessionStore` call to ``inner``."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner

    async def create(self, meta: SessionMeta, state: bytes) -> None:
        await self.inner.create(meta, state)

    async def get(self, session_id: str) -> StoredSession | None:
        return await self.inner.get(session_id)

    async def commit(
        self,
        session_id: str,
        *,
        events: Sequence[StoredEvent] = (),
        turns: Sequence[TurnRecord] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
    ) -> None:
        await self.inner.commit(
            session_id, events=events, turns=turns, state=state, updated_at=updated_at
        )

    async def read_events(
        self, session_id: str, after_seq: int, limit: int | None = None
    ) -> list[StoredEvent]:
        return await self.inner.read_events(session_id, after_seq, limit)

    async def first_seq(self, session_id: str) -> int | None:
        return await self.inner.first_seq(session_id)

    async def trim_events(self, session_id: str, keep_last: int) -> None:
        await self.inner.trim_events(session_id, keep_last)

    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        return await self.inner.list_turns(session_id)

    async def list_sessions(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        principal: str | None = None,
    ) -> list[SessionMeta]:
        return await self.inner.list_sessions(limit=limit, before=before, principal=principal)

    async def delete(self, session_id: str) -> bool:
        return await self.inner.delete(session_id)

    async def expire(self, idle_before: float) -> list[str]:
        return await self.inner.expire(idle_before)

    async def streaming_sessions(self) -> list[str]:
        return await self.inner.streaming_sessions()

    async def ping(self) -> None:
        await self.inner.ping()

    async def aclose(self) -> None:
        await self.inner.aclose()
