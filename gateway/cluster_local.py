"""The :class:`~gateway.cluster.Cluster` inside one process (SQLite or memory store).

With one process the owner is always the edge, so the shell only ever acquires,
releases and claims; the rest (following, forwarding, signals) works too, between
instances sharing a :class:`LocalHub`, so that the same contract tests run over
this and the Redis implementation. Following polls the store, which is fine for
what never runs on the hot path here.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from gateway.cluster import (
    FollowGap,
    Held,
    Inbound,
    Lease,
    LeaseLost,
    Placement,
    Signal,
    UnknownSession,
)
from gateway.stores.base import Fenced, SessionStore, StoredEvent, TurnRecord
from gateway.stores.fenced import FencedStore

DEFAULT_POLL_S = 0.05


@dataclass(slots=True)
class _Place:
    owner: str = ""
    fence: int = 0
    edge: str = ""
    epoch: int = 0
    inbox: list[Inbound] = field(default_factory=list)
    inbox_done: str = "0"


@dataclass(slots=True)
class LocalHub:
    """What the instances of one process share: members, placements, mailboxes."""

    members: set[str] = field(default_factory=set)
    places: dict[str, _Place] = field(default_factory=dict)
    mail: dict[str, list[Signal]] = field(default_factory=dict)
    serial: int = 0
    fences: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def touch(self) -> None:
        """Wake every waiter: something changed."""
        async with self.changed:
            self.changed.notify_all()

    async def wait(self, at_most_s: float) -> None:
        """Until something changes, or ``at_most_s`` seconds."""
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), at_most_s)


class LocalCluster:
    """A :class:`~gateway.cluster.Cluster` whose instances share one :class:`LocalHub`."""

    def __init__(
        self,
        store: SessionStore,
        *,
        hub: LocalHub | None = None,
        instance_id: str | None = None,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        self._store = store
        self._hub = hub or LocalHub()
        self._iid = instance_id or f"local-{secrets.token_hex(3)}"
        self._poll_s = poll_s
        self._leases: dict[str, Lease] = {}

    @property
    def instance_id(self) -> str:
        return self._iid

    @property
    def distributed(self) -> bool:
        return False

    async def __aenter__(self) -> Self:
        self._hub.members.add(self._iid)
        self._hub.mail.setdefault(self._iid, [])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release_all()
        self._hub.members.discard(self._iid)
        await self._hub.touch()

    async def alive(self, instance_id: str) -> bool:
        return instance_id in self._hub.members

    async def _place(self, session_id: str) -> _Place:
        if await self._store.get(session_id) is None:
            self._hub.places.pop(session_id, None)
            raise UnknownSession(session_id)
        return self._hub.places.setdefault(session_id, _Place())

    async def placement(self, session_id: str) -> Placement:
        p = await self._place(session_id)
        return Placement(p.owner, p.fence, p.owner in self._hub.members, p.edge, p.epoch)

    async def acquire(self, session_id: str) -> Lease:
        p = await self._place(session_id)
        if p.owner not in ("", self._iid) and p.owner in self._hub.members:
            raise Held(await self.placement(session_id))
        self._hub.fences += 1  # one counter for all: a forgotten session's fence still grows
        p.owner, p.fence = self._iid, self._hub.fences
        lease = Lease(session_id, self._iid, p.fence, p.inbox_done)
        self._leases[session_id] = lease
        return lease

    def holds(self, lease: Lease) -> bool:
        """Whether ``lease`` is still the session's."""
        p = self._hub.places.get(lease.session_id)
        return p is not None and (p.owner, p.fence) == (lease.instance_id, lease.fence)

    async def release(self, lease: Lease) -> bool:
        if self._leases.get(lease.session_id) == lease:
            del self._leases[lease.session_id]
        if not self.holds(lease):
            return False
        p = self._hub.places[lease.session_id]
        p.owner = ""
        if p.edge and p.edge != self._iid:
            await self.notify(p.edge, Signal("released", lease.session_id, p.epoch, self._iid))
        elif not p.inbox:
            del self._hub.places[lease.session_id]  # nothing left to remember
        await self._hub.touch()
        return True

    async def release_all(self) -> int:
        released = 0
        for lease in list(self._leases.values()):
            released += await self.release(lease)
        return released

    def fenced_store(self, lease: Lease, store: SessionStore | None = None) -> SessionStore:
        store = self._store if store is None else store

        async def commit(
            session_id: str,
            *,
            events: Sequence[StoredEvent] = (),
            turns: Sequence[TurnRecord] = (),
            state: bytes | None = None,
            updated_at: float | None = None,
        ) -> None:
            # No await between the check and the call: nothing can acquire in between.
            if not self.holds(lease):
                raise Fenced(f"session {session_id!r}: lease {lease.fence} is no longer held")
            await store.commit(
                session_id, events=events, turns=turns, state=state, updated_at=updated_at
            )

        return FencedStore(store, commit)

    async def claim_edge(self, session_id: str) -> tuple[int, str]:
        p = await self._place(session_id)
        p.epoch += 1
        previous, p.edge = p.edge, self._iid
        if previous:
            await self.notify(previous, Signal("takeover", session_id, p.epoch, self._iid))
        return p.epoch, previous

    async def leave_edge(self, session_id: str, epoch: int) -> bool:
        p = self._hub.places.get(session_id)
        if p is None or (p.edge, p.epoch) != (self._iid, epoch):
            return False
        p.edge = ""
        return True

    async def follow(self, session_id: str, after_seq: int) -> AsyncIterator[list[StoredEvent]]:
        first = await self._store.first_seq(session_id)
        if first is not None and first > after_seq + 1:
            raise FollowGap(f"session {session_id!r}: events after {after_seq} were trimmed")
        last = after_seq
        while True:
            batch = await self._store.read_events(session_id, last)
            if batch and batch[0].seq != last + 1:
                raise FollowGap(f"session {session_id!r}: got seq {batch[0].seq} after {last}")
            if batch:
                last = batch[-1].seq
            else:
                await asyncio.sleep(self._poll_s)
            yield batch

    async def forward(self, session_id: str, epoch: int, data: bytes) -> None:
        p = await self._place(session_id)
        self._hub.serial += 1
        p.inbox.append(Inbound(str(self._hub.serial), epoch, bytes(data)))
        await self._hub.touch()

    async def inbox(self, lease: Lease) -> AsyncIterator[Inbound]:
        after = int(lease.inbox_after or "0")
        while True:
            p = self._hub.places.get(lease.session_id)
            pending = [m for m in p.inbox if int(m.id) > after] if p is not None else []
            if not pending:
                await self._hub.wait(self._poll_s)
            for message in pending:
                yield message
                after = int(message.id)
                if not self.holds(lease):
                    raise LeaseLost(f"session {lease.session_id!r}: lease {lease.fence} lost")
                self._hub.places[lease.session_id].inbox_done = message.id

    async def pending_input(self, lease: Lease) -> list[Inbound]:
        if not self.holds(lease):
            raise LeaseLost(f"session {lease.session_id!r}: lease {lease.fence} lost")
        p = self._hub.places.get(lease.session_id)
        after = int(p.inbox_done) if p is not None else 0
        pending = [m for m in p.inbox if int(m.id) > after] if p is not None else []
        if p is not None and pending:
            p.inbox_done = pending[-1].id
        return pending

    async def notify(self, instance_id: str, signal: Signal) -> None:
        if instance_id in self._hub.members:
            self._hub.mail.setdefault(instance_id, []).append(signal)
            await self._hub.touch()

    async def signals(self) -> AsyncIterator[Signal]:
        while True:
            box = self._hub.mail.setdefault(self._iid, [])
            if not box:
                await self._hub.wait(self._poll_s)
                continue
            signal = box.pop(0)
            yield signal
