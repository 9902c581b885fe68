"""Stored, then sent: the write path of one session.

Everything a session runtime sends goes through one :class:`Pipeline`, in order:
session events (:class:`Outgoing`) and markers (an attach, a close, a
connection event). The pipeline commits what accumulated (events, turn records,
the state snapshot) in one store transaction, and only then hands the batch, in
order, to its ``dispatch`` callback, which delivers it. A marker is dispatched
after everything pushed before it is stored.

While the store fails, **nothing unstored is dispatched**: the commit is retried
with jittered exponential back-off. Memory stays bounded: :meth:`Pipeline.room`
makes a producer (the provider stream) wait while more than ``max_backlog``
events are unstored. Past ``retry_budget_s`` without a successful commit the
pipeline gives up with :class:`StoreUnavailable`; the runtime then closes its
client (1011) and drops the unstored batch, and the session resumes from what
the store holds once the store is back.

The pipeline does not wait for work on a task of its own: its owner runs
:meth:`Pipeline.run` (on one task at a time) whenever ``wake`` says there is
some, and the task ends once everything is out, so an idle session holds none.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from gateway.core.events import ServerEvent
from gateway.core.records import TurnRecord
from gateway.core.replay import LoggedEvent
from gateway.errors import Fenced, StoreError
from gateway.flag import Flag
from gateway.stores.base import SessionStore

log = logging.getLogger("gateway.pipeline")


class StoreUnavailable(StoreError):
    """The store did not take a commit within the retry budget."""


#: How often, at most, a commit carries a session's ``updated_at`` (by default).
TOUCH_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class StorePolicy:
    """How long and how often a failed commit is retried, and how much may wait."""

    retry_budget_s: float = 10.0
    backoff_s: float = 0.05
    backoff_max_s: float = 1.0
    max_backlog: int = 512
    #: A commit carries the session's ``updated_at`` at most this often (and the first
    #: always does): the time moves an index entry, a page write of its own, while
    #: what reads it (expiry, which touches live sessions itself, and the API's
    #: listing) needs it to the second, not to the chunk.
    touch_every_s: float = TOUCH_EVERY_S

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter back-off before retry ``attempt`` (1-based)."""
        return rng.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A session event: stored, then delivered."""

    logged: LoggedEvent
    event: ServerEvent


class Pipeline:
    """The ordered store-then-dispatch queue of one session."""

    def __init__(
        self,
        session_id: str,
        store: SessionStore,
        *,
        snapshot: Callable[[], bytes],
        dispatch: Callable[[object], None],
        wake: Callable[[], None],
        clock: Callable[[], float],
        trim_to: int,
        policy: StorePolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._id = session_id
        self._store = store
        self._snapshot = snapshot
        self._dispatch = dispatch
        self._wake = wake
        self._clock = clock
        self._trim_to = trim_to
        self._policy = policy or StorePolicy()
        self._random = rng or random.Random()
        self._items: list[object] = []
        self._turns: dict[str, TurnRecord] = {}
        self._state_dirty = False
        self._unstored = 0
        self._room = Flag(True)
        self._finishing = False
        #: The newest ``seq`` when the stored log was last trimmed.
        self._trimmed_seq = 0
        #: When a commit last carried ``updated_at`` (``None``: none did yet).
        self._touched: float | None = None

    @property
    def backlog(self) -> int:
        """Session events pushed and not yet stored."""
        return self._unstored

    def push(self, item: object) -> None:
        """Queue an :class:`Outgoing` event or a marker for dispatch after storing."""
        self._items.append(item)
        if isinstance(item, Outgoing):
            self._unstored += 1
            if self._unstored > self._policy.max_backlog:
                self._room.clear()
        self._wake()

    def save_turn(self, record: TurnRecord) -> None:
        """Store this turn record with the next commit (the newest one wins)."""
        self._turns[record.turn_id] = record
        self._wake()

    def mark_state(self) -> None:
        """Store a fresh state snapshot with the next commit."""
        self._state_dirty = True
        self._wake()

    async def room(self) -> None:
        """Wait until the unstored backlog is within bounds."""
        await self._room.wait()

    def finish(self) -> None:
        """Make :meth:`run` say it is the end once everything is stored and dispatched."""
        self._finishing = True
        self._wake()

    def discard(self) -> None:
        """Drop everything not yet stored (the runtime gave up on this session)."""
        self._items.clear()
        self._turns.clear()
        self._state_dirty = False
        self._unstored = 0
        self._room.set()

    def _has_work(self) -> bool:
        return bool(self._items or self._turns or self._state_dirty)

    async def run(self) -> bool:
        """Store and dispatch everything pushed, also while this runs; ``True`` when
        that was the end (:meth:`finish`). Raises :class:`StoreUnavailable`. Run it on
        one task at a time: the order of the batches is the order of the calls."""
        while self._has_work():
            await self._flush_once()
        return self._finishing

    async def _flush_once(self) -> None:
        # The batch and the snapshot are taken in one step, so the stored state
        # always matches the stored events.
        batch, self._items = self._items, []
        turns, self._turns = list(self._turns.values()), {}
        state = self._snapshot() if self._state_dirty else None
        self._state_dirty = False
        events = [item.logged for item in batch if isinstance(item, Outgoing)]
        if events or turns or state is not None:
            await self._commit(events, turns, state)
        self._unstored -= len(events)
        if self._unstored <= self._policy.max_backlog:
            self._room.set()
        if any(event.type == "response.end" for event in events):
            await self._trim(events[-1].seq)
        for item in batch:
            self._dispatch(item)

    async def _commit(
        self, events: list[LoggedEvent], turns: list[TurnRecord], state: bytes | None
    ) -> None:
        loop = asyncio.get_running_loop()
        policy = self._policy
        deadline = loop.time() + policy.retry_budget_s
        attempt = 0
        touched = self._touched
        while True:
            # Decided at each attempt: a retried commit says when it landed, and one that
            # lands past the interval carries the time. A clock that went back also
            # touches (the interval is measured on it).
            now = self._clock()
            touch = touched is None or not 0 <= now - touched < policy.touch_every_s
            try:
                await self._store.commit(
                    self._id,
                    events=events,
                    turns=turns,
                    state=state,
                    updated_at=now if touch else None,
                )
            except Fenced:
                raise  # another instance owns the session now: retrying cannot help
            except StoreError as exc:
                attempt += 1
                left = deadline - loop.time()
                if left <= 0:
                    raise StoreUnavailable(
                        f"the store took no commit for {policy.retry_budget_s:g} s: {exc}"
                    ) from exc
                if attempt == 1:
                    log.warning(
                        "store commit failed session=%s: %s; %d event(s) wait, not delivered; "
                        "retrying for up to %g s",
                        self._id,
                        exc,
                        len(events),
                        policy.retry_budget_s,
                    )
                await asyncio.sleep(min(left, policy.backoff(attempt, self._random)))
                continue
            if attempt:
                log.info("store commit succeeded session=%s after %d retries", self._id, attempt)
            if touch:
                self._touched = now
            return

    async def _trim(self, last_seq: int) -> None:
        """Keep the stored log about as long as the replay log: at a turn's end, once
        the log is longer than the replay log by an eighth of it (or more). Not at
        every turn's end: most sessions never outgrow the replay log, and a no-op
        trim costs a store round trip a turn."""
        if last_seq <= self._trim_to or last_seq - self._trimmed_seq < max(1, self._trim_to // 8):
            return
        try:
            await self._store.trim_events(self._id, self._trim_to)
        except StoreError:
            log.warning("store trim failed session=%s; the next turn trims", self._id)
            return
        self._trimmed_seq = last_seq
