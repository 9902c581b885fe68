"""What several gateway instances need to share one conversation: the ``Cluster`` interface.

For each session, at any moment, one instance is its **owner**: it runs the session
core and the provider stream and is the only writer, holding a *lease* whose
**fencing token** only ever grows; the store refuses a commit carrying an older one
(:class:`~gateway.stores.redis.Fenced`), so an owner that was paused and comes back
can neither write nor, since delivery follows the store, deliver. The instance that
holds the client's WebSocket is its **edge**; each new connection bumps the session's
connection **epoch**, and the older socket, wherever it is, is told to close (4409).
Owner and edge are the same instance except while a turn started on one instance
still streams after the client came back on another: then the edge *follows* the
session's event log from the store and *forwards* the client's input to the owner's
inbox, until the owner releases the lease at the turn's end.

An instance is alive while its liveness key is renewed (``GATEWAY_INSTANCE_TTL_S``);
another may take a session over from a dead owner, never from a live one.

Implementations: :class:`gateway.cluster_local.LocalCluster` (one process, SQLite or
memory store) and :class:`gateway.stores.redis_cluster.RedisCluster`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self

from gateway.stores.base import SessionStore, StoredEvent

SignalKind = Literal["takeover", "attached", "detached", "released", "deleted", "wake"]


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to write a session, as :meth:`Cluster.acquire` granted it.

    ``inbox_after`` is where the new owner's inbox continues: the last message a
    previous owner handled, so input sent to an owner that died is not lost.
    """

    session_id: str
    instance_id: str
    fence: int
    inbox_after: str


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a session lives: its owner (``""`` for none) and its edge (``""`` for none)."""

    owner: str
    fence: int
    owner_alive: bool
    edge: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Signal:
    """A control message to one instance about one session.

    * ``takeover``: close the session's sockets older than ``epoch`` (4409);
    * ``attached`` / ``detached``: a remote edge took or left the session's socket;
    * ``released``: the owner released the session (an edge following it may acquire);
    * ``deleted``: the session was deleted (close its socket, 1000);
    * ``wake``: nothing; makes a blocked reader look again.
    """

    kind: SignalKind
    session_id: str
    epoch: int
    sender: str


@dataclass(frozen=True, slots=True)
class Inbound:
    """Client input an edge forwarded to the owner: the frame and the edge's epoch."""

    id: str
    epoch: int
    data: bytes


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop.

    A cancellation can reach us turned into another error (redis-py maps a read
    cut short into its own ``TimeoutError``/``ConnectionError``, and Python 3.11's
    ``asyncio.timeout`` may swallow a cancel that lands as it expires); a loop that
    goes on after such an error must check, or it never stops.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class UnknownSession(LookupError):
    """The session is not in the store (never made, deleted or expired)."""


class Held(Exception):
    """:meth:`Cluster.acquire` refused: a live instance owns the session."""

    def __init__(self, placement: Placement) -> None:
        super().__init__(f"owned by live instance {placement.owner!r}")
        self.placement = placement


class LeaseLost(Exception):
    """The lease is no longer the session's (another instance acquired it)."""


class FollowGap(Exception):
    """The log was trimmed past the follower's position: the client must resync."""


class Cluster(Protocol):
    """Ownership, liveness, following, forwarding and signals between instances.

    Use as ``async with cluster:`` (liveness renewed inside; on exit every lease is
    released and the instance is gone at once, so no one waits for its TTL). Every
    method may raise :class:`~gateway.stores.base.StoreError` when the shared store
    is unreachable.
    """

    @property
    def instance_id(self) -> str:
        """This instance's unique id (fresh for each process)."""
        ...

    @property
    def distributed(self) -> bool:
        """Whether other processes may share the sessions (so follow/forward matter)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def alive(self, instance_id: str) -> bool:
        """Whether ``instance_id`` renewed its liveness within the TTL."""
        ...

    async def placement(self, session_id: str) -> Placement:
        """The session's owner and edge; ``UnknownSession`` if it is not stored."""
        ...

    async def acquire(self, session_id: str) -> Lease:
        """Own the session with a new, higher fence: if nobody owns it, its owner is
        dead, or it is this instance (a new runtime supersedes the old one). Raises
        :class:`Held` when another live instance owns it, ``UnknownSession``."""
        ...

    async def release(self, lease: Lease) -> bool:
        """Give the session up (the next owner waits for no TTL); ``False`` if the
        lease was already lost."""
        ...

    async def release_all(self) -> int:
        """Release every lease this instance holds (drain); how many were released."""
        ...

    def fenced_store(self, lease: Lease, store: SessionStore | None = None) -> SessionStore:
        """``store`` (by default the cluster's own backend; pass the wrapped store the
        gateway writes through) as the holder of ``lease`` writes it: every commit is
        refused (``Fenced``) once the lease is no longer the session's."""
        ...

    async def claim_edge(self, session_id: str) -> tuple[int, str]:
        """Record this instance as the session's edge for a new connection: returns
        the new epoch and the previous edge, which got a ``takeover`` signal."""
        ...

    async def leave_edge(self, session_id: str, epoch: int) -> bool:
        """The connection of ``epoch`` ended; ``False`` if a newer one took over."""
        ...

    def follow(self, session_id: str, after_seq: int) -> AsyncIterator[list[StoredEvent]]:
        """The session's events after ``after_seq`` as they are committed, in order,
        without gap or repeat; an empty batch now and then while nothing comes (so
        the caller can check the owner's liveness). Raises :class:`FollowGap`."""
        ...

    async def forward(self, session_id: str, epoch: int, data: bytes) -> None:
        """Append client input to the session's inbox, for whichever instance owns it."""
        ...

    def inbox(self, lease: Lease) -> AsyncIterator[Inbound]:
        """The owner's view of the inbox from ``lease.inbox_after``; each message is
        marked handled when the next one is asked for. Raises :class:`LeaseLost`."""
        ...

    async def pending_input(self, lease: Lease) -> list[Inbound]:
        """The inbox after the last message marked handled, as it is now, without
        waiting; all of it is marked handled (a new owner takes what its predecessor
        left). Raises :class:`LeaseLost`."""
        ...

    async def notify(self, instance_id: str, signal: Signal) -> None:
        """Send ``signal`` to ``instance_id`` (kept until read, lost if it is dead)."""
        ...

    def signals(self) -> AsyncIterator[Signal]:
        """This instance's signals, in the order sent; runs until cancelled."""
        ...
