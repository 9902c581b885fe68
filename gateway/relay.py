"""Serving a client here while another instance runs its session: the relay.

A client that resumes on this instance (the edge) while another live instance (the
owner) streams a turn of its session gets, from here: ``session.ready``, what it
missed from the store, then the session's events live as the owner commits them
(:meth:`~gateway.cluster.Cluster.follow`: no gap, no repeat), while its input goes
to the owner's inbox (:meth:`~gateway.cluster.Cluster.forward`). The owner
finishes the turn and releases the session (or dies, and its liveness expires);
the relay then takes the lease, restores the session from the store and attaches
the same socket to the new local runtime, with no second ``session.ready`` and
from the last ``seq`` it delivered, and from then on it is a plain proxy.

Client input crosses instances as a small JSON envelope (:func:`encode_input`);
the relay answers ``ping`` itself, since the owner has no socket to answer on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import orjson

from gateway.cluster import Cluster, FollowGap, Inbound
from gateway.core import wire
from gateway.core.codes import CloseCode, ErrorCode
from gateway.core.events import (
    ClientEvent,
    FunctionResult,
    Greeted,
    Interrupt,
    Ping,
    PlaybackAck,
    Pong,
    ResponseCreate,
    ServerEvent,
    SessionEnd,
    SessionUpdate,
    UserMessage,
)
from gateway.core.replay import LoggedEvent
from gateway.errors import StoreError
from gateway.runtime import ClientSink, SessionRuntime
from gateway.tasks import TaskSet

log = logging.getLogger("gateway.relay")

_FLAT_EVENTS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        UserMessage,
        Interrupt,
        PlaybackAck,
        ResponseCreate,
        SessionUpdate,
        SessionEnd,
        FunctionResult,
        Greeted,
    )
}


def encode_input(event: ClientEvent | tuple[ErrorCode, str]) -> bytes:
    """A client event (or a rejected frame: code and message) for the owner's inbox."""
    if isinstance(event, tuple):
        return orjson.dumps({"k": "reject", "code": event[0].value, "message": event[1]})
    return orjson.dumps({"k": type(event).__name__, "f": asdict(event)})


def decode_input(data: bytes) -> ClientEvent | tuple[ErrorCode, str] | None:
    """The inverse of :func:`encode_input`; ``None`` for what this gateway cannot read."""
    body = orjson.loads(data)
    if body.get("k") == "reject":
        return ErrorCode(body["code"]), str(body["message"])
    cls = _FLAT_EVENTS.get(body.get("k", ""))
    if cls is None:
        return None
    event: ClientEvent = cls(**body["f"])
    return event


def apply_input(runtime: SessionRuntime, message: Inbound) -> None:
    """Feed forwarded input to the owner's runtime."""
    decoded = decode_input(message.data)
    if decoded is None:
        log.warning("session=%s: dropped unreadable forwarded input", runtime.session.id)
    elif isinstance(decoded, tuple):
        runtime.reject(*decoded)
    else:
        runtime.receive(decoded)


class _Named(Protocol):
    @property
    def id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class _SessionName:
    id: str


class _Quiet:
    """The client, as the runtime that takes over from the relay sees it: its first
    ``session.ready`` is dropped (the client was greeted already)."""

    def __init__(self, client: ClientSink) -> None:
        self._client = client
        self._greeted = False

    @property
    def closed(self) -> bool:
        return self._client.closed

    def deliver(self, frame: LoggedEvent, event: ServerEvent | None = None) -> None:
        if not self._greeted and frame.type == "session.ready":
            self._greeted = True
            return
        self._client.deliver(frame, event)

    def replay(self, frames: Sequence[LoggedEvent]) -> None:
        self._client.replay(frames)

    def close(self, code: int, reason: str) -> None:
        self._client.close(code, reason)

    def abort(self, code: int, reason: str) -> None:
        self._client.abort(code, reason)


#: What the relay asks the manager when the session looks free: the runtime it
#: restored (attach the client to it) and the input forwarded but not yet handled,
#: or ``None`` while another instance still holds the session.
TakeOver = Callable[[], Awaitable[tuple[SessionRuntime, list[Inbound]] | None]]


class Relay:
    """One client on this instance, its session owned by another (see the module)."""

    def __init__(
        self,
        session_id: str,
        client: ClientSink,
        *,
        cluster: Cluster,
        epoch: int,
        last_seq: int,
        resume_token: str,
        take_over: TakeOver,
        greeting: Sequence[ServerEvent],
        on_left: Callable[[int], None] = lambda epoch: None,
    ) -> None:
        self.session: _Named = _SessionName(session_id)
        self._client = client
        self._cluster = cluster
        self._epoch = epoch
        self._last = last_seq
        self._token = resume_token
        self._take_over = take_over
        self._greeting = list(greeting)
        self._on_left = on_left
        self._switching = False
        self._runtime: SessionRuntime | None = None
        self._sink = _Quiet(client)
        self._pending: list[ClientEvent | tuple[ErrorCode, str]] = []
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks = TaskSet(f"relay {session_id}", self._failed)
        self._follow = self._tasks.spawn(self._run(), name=f"relay:{session_id}")
        self._forward = self._tasks.spawn(self._forward_loop(), name=f"forward:{session_id}")

    # --- what the connection calls ---------------------------------------------------

    def receive(self, event: ClientEvent) -> None:
        if self._runtime is not None:
            self._runtime.receive(event)
        elif isinstance(event, Ping):
            pong = Pong(session_id=self.session.id, seq=self._last, id=event.id)
            self._client.deliver(_frame(pong), pong)
        elif self._switching:
            self._pending.append(event)  # taking over: the new runtime gets it
        else:
            self._outbox.put_nowait(encode_input(event))

    def reject(self, code: ErrorCode, message: str) -> None:
        if self._runtime is not None:
            self._runtime.reject(code, message)
        elif self._switching:
            self._pending.append((code, message))
        else:
            self._outbox.put_nowait(encode_input((code, message)))

    def close_client(self, code: int, reason: str) -> None:
        if self._runtime is not None:
            self._runtime.close_client(code, reason)
        else:
            self._client.close(code, reason)

    def detach(self, client: ClientSink) -> None:
        if self._runtime is not None:
            self._runtime.detach(self._sink)
        else:
            self._on_left(self._epoch)
        self._follow.cancel()
        self._forward.cancel()

    async def aclose(self) -> None:
        """Stop relaying and wait for the relay's tasks to end."""
        await self._tasks.aclose()

    @property
    def done(self) -> bool:
        """Nothing of the relay runs any more (detached, or handed to a runtime)."""
        return len(self._tasks) == 0

    # --- the relay -----------------------------------------------------------------

    async def _run(self) -> None:
        sid = self.session.id
        greeting, self._greeting = self._greeting, []
        for event in greeting:
            self._client.deliver(_frame(event), event)
        try:
            first = True
            async for batch in self._cluster.follow(sid, self._last):
                if batch:
                    if first:
                        self._client.replay(batch)
                    else:
                        for frame in batch:
                            self._client.deliver(frame)
                    first = False
                    self._last = batch[-1].seq
                    if any(frame.type == "session.ended" for frame in batch):
                        self._client.close(CloseCode.NORMAL, "the session ended")
                        return
                if (not batch or batch[-1].type == "response.end") and await self._free():
                    await self._switch()
                    return
        except FollowGap:
            log.warning("session=%s: the relay fell behind the log; taking over", sid)
            self._client.close(CloseCode.TRY_AGAIN_LATER, "resume again")
        except StoreError as exc:
            log.warning("session=%s: the relay lost the store: %s", sid, exc)
            self._client.close(CloseCode.TRY_AGAIN_LATER, "session store unavailable; resume")

    async def _free(self) -> bool:
        placement = await self._cluster.placement(self.session.id)
        return not placement.owner or not placement.owner_alive

    async def _switch(self) -> None:
        """Take the session over: stop forwarding, restore it here, attach the client."""
        self._switching = True
        await self._outbox.join()
        self._forward.cancel()
        taken = await self._take_over()
        if taken is None:
            # Another instance took it first: go on relaying from where we are.
            self._switching = False
            for item in self._pending:
                self._outbox.put_nowait(encode_input(item))
            self._pending = []
            self._forward = self._tasks.spawn(self._forward_loop(), name="forward")
            self._follow = self._tasks.spawn(self._run(), name="relay")
            return
        runtime, unhandled = taken
        self._runtime = runtime
        log.info("session=%s taken over by this instance from seq %d", self.session.id, self._last)
        runtime.attach(self._sink, resume_token=self._token, last_seq=self._last)
        for message in unhandled:
            apply_input(runtime, message)
        pending, self._pending = self._pending, []
        for item in pending:
            if isinstance(item, tuple):
                runtime.reject(*item)
            else:
                runtime.receive(item)

    async def _forward_loop(self) -> None:
        while True:
            data = await self._outbox.get()
            try:
                await self._cluster.forward(self.session.id, self._epoch, data)
            finally:
                self._outbox.task_done()

    def _failed(self, task: asyncio.Task[Any], exc: BaseException) -> None:
        log.error("relay task %s failed", task.get_name(), exc_info=exc)
        self._client.abort(CloseCode.INTERNAL_ERROR, "internal error; resume to continue")


def _frame(event: ServerEvent) -> LoggedEvent:
    return LoggedEvent(event.seq, event.type, None, wire.encode(event))
