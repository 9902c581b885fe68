"""Store budgets: stored sessions per process, and stored event log per session.

A store wrapper, so that every way of making or growing a session is counted
without the session manager knowing:

- **Sessions** (``GATEWAY_MAX_STORED_SESSIONS``): the count is read once at
  start-up and kept by ``create`` / ``delete`` / ``expire``. Past the cap a new
  client session is refused with :class:`~gateway.sessions.TooManySessions`
  (HTTP 429 / close 4429 ``too_many_sessions``). Platform sessions are counted
  but never refused: a call in progress must not fail, and their routes are
  guarded by the platforms' own credentials.
- **Event log per session**: the pipeline trims a session's stored log to the
  replay capacity once per turn, so events that start no turn (``session.update``
  after ``session.update``) grew it without end. Here a session's log is also
  trimmed as soon as a replay log's worth of events, or of characters
  (:data:`~gateway.core.replay.DEFAULT_MAX_CHARS`), was added since its last
  trim; the kept part is sized by the average event, so a session stores about
  twice the replay log at most.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.core.replay import DEFAULT_MAX_CHARS
from gateway.sessions import TooManySessions
from gateway.stores.base import (
    SessionMeta,
    SessionStore,
    StoredEvent,
    StoreError,
    TurnRecord,
)
from gateway.stores.wrapper import StoreWrapper
from gateway.tenants import CLIENT_KIND, session_kind

log = logging.getLogger("gateway.budgets")

_COUNT_PAGE = 1000


class CappedStore(StoreWrapper):
    """A :class:`SessionStore` that refuses new client sessions past ``max_sessions``."""

    def __init__(
        self,
        inner: SessionStore,
        *,
        max_sessions: int,
        count: int,
        log_events: int = 1024,
        log_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        super().__init__(inner)
        self._max = max_sessions
        self._count = count
        self._log_events = log_events
        self._log_chars = log_chars
        #: Per session written since its last trim: (events, characters).
        self._grown: dict[str, tuple[int, int]] = {}

    @classmethod
    async def wrap(
        cls, inner: SessionStore, *, max_sessions: int, log_events: int = 1024
    ) -> CappedStore:
        """Wrap ``inner``, counting the sessions it already holds."""
        count, before = 0, None
        while True:
            page = await inner.list_sessions(limit=_COUNT_PAGE, before=before)
            count += len(page)
            if len(page) < _COUNT_PAGE:
                return cls(inner, max_sessions=max_sessions, count=count, log_events=log_events)
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
        await self.inner.create(meta, state)
        self._count += 1

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
        if events:
            await self._bound_log(session_id, events)

    async def _bound_log(self, session_id: str, events: Sequence[StoredEvent]) -> None:
        count, chars = self._grown.get(session_id, (0, 0))
        count, chars = count + len(events), chars + sum(len(e.data) for e in events)
        if count < self._log_events and chars < self._log_chars:
            self._grown[session_id] = (count, chars)
            return
        keep = min(self._log_events, max(1, self._log_chars * count // max(chars, 1)))
        try:
            await self.trim_events(session_id, keep)
        except StoreError:  # the commit itself succeeded: never report it failed
            log.warning("store trim failed session=%s; the next commit trims", session_id)

    async def trim_events(self, session_id: str, keep_last: int) -> None:
        await self.inner.trim_events(session_id, keep_last)
        self._grown.pop(session_id, None)

    async def delete(self, session_id: str) -> bool:
        deleted = await self.inner.delete(session_id)
        self._grown.pop(session_id, None)
        if deleted:
            self._count = max(0, self._count - 1)
        return deleted

    async def expire(self, idle_before: float) -> list[str]:
        expired = await self.inner.expire(idle_before)
        for session_id in expired:
            self._grown.pop(session_id, None)
        self._count = max(0, self._count - len(expired))
        return expired
