"""A store view whose commits are fenced by one lease (``Cluster.fenced_store``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.stores.base import SessionStore, StoredEvent, TurnRecord
from gateway.stores.wrapper import StoreWrapper


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


class FencedStore(StoreWrapper):
    """A shared store as the holder of one lease writes it.

    Every :meth:`commit` goes through ``commit``, which refuses it with
    :class:`~gateway.stores.base.Fenced` once the lease is lost; everything else goes
    straight to the shared store. :meth:`aclose` does nothing (the shared store is
    closed by whoever opened it).
    """

    def __init__(self, store: SessionStore, commit: CommitFn) -> None:
        super().__init__(store)
        self._commit = commit

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

    async def aclose(self) -> None:
        return None
