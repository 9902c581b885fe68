"""A store view whose commits are fenced by one lease (``Cluster.fenced_store``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.stores.base import SessionMeta, SessionStore, StoredEvent, StoredSession, TurnRecord


class CommitFn(Protocol):
    """``SessionStore.commit``, fenced."""

    async def __call__(
        self,
        session_id: str,
        *,
        events: Sequence[StoredEvent] = (),
        turns: Sequence[TurnRecord] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
    ) -> None: ...


class FencedStore:
    """A shared store as the holder of one lease writes it.

    Every :meth:`commit` goes through ``commit``, which refuses it with
    :class:`~gateway.stores.base.Fenced` once the lease is lost; everything else goes
    straight to the shared store. :meth:`aclose` does nothing (the shared store is
    closed by whoever opened it).
    """

    def __init__(self, store: SessionStore, commit: CommitFn) -> None:
        self._store = store
        self._commit = commit

    async def create(self, meta: SessionMeta, state: bytes) -> None:
        await self._store.create(meta, state)

    async def get(self, session_id: str) -> StoredSession | None:
        return await self._store.get(session_id)

    async def commit(
        self,
        session_id: str,
        *,
        events: Sequence[StoredEvent] = (),
        turns: Sequence[TurnRecord] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
    ) -> None:
        await self._commit(
            session_id, events=events, turns=turns, state=state, updated_at=updated_at
        )

    async def read_events(
        self, session_id: str, after_seq: int, limit: int | None = None
    ) -> list[StoredEvent]:
        return await self._store.read_events(session_id, after_seq, limit)

    async def first_seq(self, session_id: str) -> int | None:
        return await self._store.first_seq(session_id)

    async def trim_events(self, session_id: str, keep_last: int) -> None:
        await self._store.trim_events(session_id, keep_last)

    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        return await self._store.list_turns(session_id)

    async def list_sessions(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        principal: str | None = None,
    ) -> list[SessionMeta]:
        return await self._store.list_sessions(limit=limit, before=before, principal=principal)

    async def delete(self, session_id: str) -> bool:
        return await self._store.delete(session_id)

    async def expire(self, idle_before: float) -> list[str]:
        return await self._store.expire(idle_before)

    async def streaming_sessions(self) -> list[str]:
        return await self._store.streaming_sessions()

    async def ping(self) -> None:
        await self._store.ping()

    async def aclose(self) -> None:
        return None
