"""The cap on stored sessions per process (``GATEWAY_MAX_STORED_SESSIONS``).

A store wrapper, so that every way of making a session (``/ws``, ``POST
/sessions``) is counted without the session manager knowing: the count is read
once at start-up and kept by ``create`` / ``delete`` / ``expire``. Past the cap a
new client session is refused with :class:`~gateway.sessions.TooManySessions`
(HTTP 429 / close 4429 ``too_many_sessions``). Platform sessions are counted but
never refused: a call in progress must not fail, and their routes are guarded by
the platforms' own credentials.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.sessions import TooManySessions
from gateway.stores.base import SessionMeta, SessionStore, StoredEvent, StoredSession, TurnRecord
from gateway.tenants import CLIENT_KIND, session_kind

_COUNT_PAGE = 1000


class CappedStore:
    """A :class:`SessionStore` that refuses new client sessions past ``max_sessions``."""

    def __init__(self, inner: SessionStore, *, max_sessions: int, count: int) -> None:
        self._inner = inner
        self._max = max_sessions
        self._count = count

    @classmethod
    async def wrap(cls, inner: SessionStore, *, max_sessions: int) -> CappedStore:
        """Wrap ``inner``, counting the sessions it already holds."""
        count, before = 0, None
        while True:
            page = await inner.list_sessions(limit=_COUNT_PAGE, before=before)
            count += len(page)
            if len(page) < _COUNT_PAGE:
                return cls(inner, max_sessions=max_sessions, count=count)
            before = (page[-1].created_at, page[-1].session_id)

    @property
    def count(self) -> int:
        """Sessions stored now, as this process counts them."""
        return self._count

    async def create(self, meta: SessionMeta, state: bytes) -> None:
        client = session_kind(meta.session_id, meta.principal) == CLIENT_KIND
        if client and self._count >= self._max:
            raise TooManySessions(
                f"the gateway holds its maximum of {self._max} sessions; try again later"
            )
        await self._inner.create(meta, state)
        self._count += 1

    async def get(self, session_id: str) -> StoredSession | None:
        return await self._inner.get(session_id)

    async def commit(
        self,
        session_id: str,
        *,
        events: Sequence[StoredEvent] = (),
        turns: Sequence[TurnRecord] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
    ) -> None:
        await self._inner.commit(
            session_id, events=events, turns=turns, state=state, updated_at=updated_at
        )

    async def read_events(
        self, session_id: str, after_seq: int, limit: int | None = None
    ) -> list[StoredEvent]:
        return await self._inner.read_events(session_id, after_seq, limit)

    async def first_seq(self, session_id: str) -> int | None:
        return await self._inner.first_seq(session_id)

    async def trim_events(self, session_id: str, keep_last: int) -> None:
        await self._inner.trim_events(session_id, keep_last)

    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        return await self._inner.list_turns(session_id)

    async def list_sessions(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        principal: str | None = None,
    ) -> list[SessionMeta]:
        return await self._inner.list_sessions(limit=limit, before=before, principal=principal)

    async def delete(self, session_id: str) -> bool:
        deleted = await self._inner.delete(session_id)
        if deleted:
            self._count = max(0, self._count - 1)
        return deleted

    async def expire(self, idle_before: float) -> list[str]:
        expired = await self._inner.expire(idle_before)
        self._count = max(0, self._count - len(expired))
        return expired

    async def streaming_sessions(self) -> list[str]:
        return await self._inner.streaming_sessions()

    async def ping(self) -> None:
        await self._inner.ping()

    async def aclose(self) -> None:
        await self._inner.aclose()
