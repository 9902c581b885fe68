"""Which instance runs each session, for the :class:`~gateway.sessions.SessionManager`.

The manager runs a session only while it holds the session's lease (see
:mod:`gateway.cluster`); the runtime writes through the lease's fenced store, so a
runtime whose lease was taken over can write, and so deliver, nothing more.

With one process (:class:`~gateway.cluster_local.LocalCluster`) the lease is always
granted and nothing else happens. With several (Redis):

* every connection claims the session's edge, which tells the older socket,
  wherever it is, to close (4409);
* a resume that finds the session owned by another live instance tells that owner
  (``attached``); the owner closes its own older socket, lets the streaming turn
  finish (a drain), stops and releases; the resume takes the lease as soon as it is
  released, or once the owner's liveness expired (it died: the cut turn ends
  ``failed`` on restore), and replays what the client missed from the store;
* deleting a session tells its owner and edge instances (``deleted``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.cluster import Cluster, Held, Lease, LeaseLost, Signal, UnknownSession
from gateway.core.codes import CloseCode
from gateway.core.events import ServerEvent
from gateway.core.replay import LoggedEvent
from gateway.errors import ResumeRefused
from gateway.relay import apply_input
from gateway.runtime import ClientSink, SessionRuntime
from gateway.stores.base import SessionStore
from gateway.tasks import TaskSet

log = logging.getLogger("gateway.ownership")

#: How often a resume waiting for another instance's lease asks again.
POLL_S = 0.05


class Ownership:
    """The leases and client sockets (edges) of this instance's sessions."""

    def __init__(
        self,
        cluster: Cluster,
        store: SessionStore,
        live: Mapping[str, SessionRuntime],
        *,
        handover_s: float,
    ) -> None:
        self._cluster = cluster
        self._store = store
        self._live = live
        self._handover_s = handover_s
        self._leases: dict[str, tuple[Lease, SessionStore]] = {}
        self._edges: dict[str, tuple[int, ClientSink]] = {}
        self._handing_over: set[str] = set()
        self._remote: dict[str, _RemoteEdge] = {}
        self._tasks = TaskSet("ownership", self._task_failed)

    def writer(self, session_id: str) -> SessionStore:
        """The store as this instance's lease of ``session_id`` writes it."""
        held = self._leases.get(session_id)
        return self._store if held is None else held[1]

    async def own(self, session_id: str, *, epoch: int | None = None) -> None:
        """Take the session's lease, waiting (up to the hand-over time) for a live
        owner to hand it over. ``epoch`` is the connection waiting for it; a newer
        connection elsewhere ends the wait (4409). Raises ``ResumeRefused``."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            try:
                lease = await self._cluster.acquire(session_id)
            except UnknownSession as exc:
                raise ResumeRefused(CloseCode.UNKNOWN_SESSION, "unknown session") from exc
            except Held as held:
                if deadline is None:
                    deadline = loop.time() + self._handover_s
                    await self._ask(held.placement.owner, session_id, epoch or 0)
                if epoch is not None and self._superseded(session_id, epoch):
                    raise ResumeRefused(
                        CloseCode.TAKEN_OVER, "another connection resumed this session"
                    ) from held
                if loop.time() > deadline:
                    raise ResumeRefused(
                        CloseCode.TRY_AGAIN_LATER,
                        "the session is busy on another instance; resume again",
                    ) from held
                await asyncio.sleep(POLL_S)
                continue
            self._leases[session_id] = (lease, self._cluster.fenced_store(lease, self._store))
            return

    async def try_own(self, session_id: str, epoch: int) -> Held | None:
        """Take the lease if it is free (``None``); else ask its live owner to hand
        it over and return why not."""
        try:
            lease = await self._cluster.acquire(session_id)
        except UnknownSession as exc:
            raise ResumeRefused(CloseCode.UNKNOWN_SESSION, "unknown session") from exc
        except Held as held:
            await self._ask(held.placement.owner, session_id, epoch)
            return held
        self._leases[session_id] = (lease, self._cluster.fenced_store(lease, self._store))
        return None

    def lease(self, session_id: str) -> Lease | None:
        """This instance's lease of ``session_id``, if it holds one."""
        held = self._leases.get(session_id)
        return None if held is None else held[0]

    async def _ask(self, owner: str, session_id: str, epoch: int) -> None:
        log.info("session=%s runs on instance %s: asking it to hand over", session_id, owner)
        await self._cluster.notify(
            owner, Signal("attached", session_id, epoch, self._cluster.instance_id)
        )

    def release(self, session_id: str) -> None:
        """The session's runtime stopped: give its lease up (in the background)."""
        held = self._leases.pop(session_id, None)
        edge = self._edges.get(session_id)
        if edge is not None and edge[1].closed:
            del self._edges[session_id]
        if held is not None:
            self._tasks.spawn(self._release(held[0]), name=f"release:{session_id}")

    async def _release(self, lease: Lease) -> None:
        if not await self._cluster.release(lease):
            log.info("session=%s was taken over before its release", lease.session_id)

    async def claim(self, session_id: str, client: ClientSink) -> int:
        """Record ``client`` as the session's socket; returns its epoch. An older
        socket of the session, here or on another instance, is told to close."""
        if not self._cluster.distributed:
            return 0
        try:
            epoch, _ = await self._cluster.claim_edge(session_id)
        except UnknownSession as exc:
            raise ResumeRefused(CloseCode.UNKNOWN_SESSION, "unknown session") from exc
        old = self._edges.get(session_id)
        if old is not None and old[1] is not client and session_id not in self._live:
            old[1].abort(CloseCode.TAKEN_OVER, "another connection resumed this session")
        self._edges[session_id] = (epoch, client)
        return epoch

    def _superseded(self, session_id: str, epoch: int) -> bool:
        edge = self._edges.get(session_id)
        return edge is not None and edge[0] != epoch

    async def on_signal(self, signal: Signal) -> None:
        """Act on a signal from another instance."""
        if signal.sender == self._cluster.instance_id:
            return  # local takeovers are the runtime's own business
        session_id = signal.session_id
        runtime = self._live.get(session_id)
        match signal.kind:
            case "takeover" | "attached":
                edge = self._edges.get(session_id)
                if edge is not None and edge[0] < signal.epoch:
                    del self._edges[session_id]
                    edge[1].abort(CloseCode.TAKEN_OVER, "another connection resumed this session")
                if runtime is not None and not runtime.stopping:
                    self._attach_remote(runtime, signal)
                    if session_id not in self._handing_over:
                        self._handing_over.add(session_id)
                        self._tasks.spawn(self._hand_over(runtime), name=f"handover:{session_id}")
            case "detached":
                remote = self._remote.get(session_id)
                if runtime is not None and remote is not None and remote.epoch == signal.epoch:
                    del self._remote[session_id]
                    runtime.detach(remote)  # the grace window starts here, as for a local client
            case "deleted":
                if runtime is not None:
                    runtime.terminate("the session was deleted")
                edge = self._edges.pop(session_id, None)
                if edge is not None and runtime is None:
                    edge[1].close(CloseCode.NORMAL, "the session was deleted")
            case _:
                return

    def _attach_remote(self, runtime: SessionRuntime, signal: Signal) -> None:
        """The client is attached on another instance now: the runtime counts it as
        attached (no grace timer) until that instance says it left."""
        remote = self._remote.get(signal.session_id)
        if remote is not None and remote.epoch >= signal.epoch:
            return
        remote = _RemoteEdge(signal.sender, signal.epoch)
        self._remote[signal.session_id] = remote
        runtime.attach(remote, resume_token="", last_seq=None)

    def relay_left(self, session_id: str, epoch: int) -> None:
        """A client this instance relayed went away: tell the owner (its grace window)."""
        if self._cluster.distributed:
            self._tasks.spawn(self._tell_left(session_id, epoch), name=f"left:{session_id}")

    async def _tell_left(self, session_id: str, epoch: int) -> None:
        try:
            placement = await self._cluster.placement(session_id)
        except UnknownSession:
            return
        if placement.owner and placement.owner != self._cluster.instance_id:
            left = Signal("detached", session_id, epoch, self._cluster.instance_id)
            await self._cluster.notify(placement.owner, left)

    async def _hand_over(self, runtime: SessionRuntime) -> None:
        """Another instance wants the session: take the client's input it forwards,
        finish the streaming turn, then stop (which releases the lease)."""
        session_id = runtime.session.id
        log.info("session=%s resumed on another instance: handing it over", session_id)
        lease = self.lease(session_id)
        pump = None
        if lease is not None:
            pump = self._tasks.spawn(self._pump(runtime, lease), name=f"inbox:{session_id}")
        try:
            deadline = asyncio.get_running_loop().time() + self._handover_s * 0.8
            await runtime.drain(deadline, reconnect_ms=0)
        finally:
            self._handing_over.discard(session_id)
            self._remote.pop(session_id, None)
            if pump is not None:
                pump.cancel()

    async def _pump(self, runtime: SessionRuntime, lease: Lease) -> None:
        """Feed the runtime what the relaying edge forwards, until the lease is lost."""
        try:
            async for message in self._cluster.inbox(lease):
                if runtime.stopping:
                    # Neither applied nor marked handled (that happens when the next
                    # message is asked for): the next owner takes it (pending_input).
                    return
                apply_input(runtime, message)
        except LeaseLost:
            return

    async def tell_deleted(self, session_id: str) -> None:
        """The session was deleted here: its owner and edge elsewhere close it."""
        try:
            placement = await self._cluster.placement(session_id)
        except UnknownSession:
            return
        me = self._cluster.instance_id
        deleted = Signal("deleted", session_id, placement.epoch, me)
        for instance in {placement.owner, placement.edge} - {"", me}:
            await self._cluster.notify(instance, deleted)

    def _task_failed(self, task: asyncio.Task[Any], exc: BaseException) -> None:
        log.error("ownership task %s failed", task.get_name(), exc_info=exc)

    async def aclose(self) -> None:
        """Stop the background releases and hand-overs (leaving releases every lease)."""
        await self._tasks.aclose()


class _RemoteEdge:
    """The owner's stand-in for a client attached on another instance: that instance
    follows the store, so nothing is sent from here."""

    def __init__(self, instance_id: str, epoch: int) -> None:
        self.instance_id = instance_id
        self.epoch = epoch
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def deliver(self, frame: LoggedEvent, event: ServerEvent | None = None) -> None:
        return None

    def replay(self, frames: Sequence[LoggedEvent]) -> None:
        return None

    def close(self, code: int, reason: str) -> None:
        self._closed = True

    def abort(self, code: int, reason: str) -> None:
        self._closed = True
