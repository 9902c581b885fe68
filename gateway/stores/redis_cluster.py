"""The :class:`~gateway.cluster.Cluster` on Redis, sharing the :class:`RedisStore`'s client.

* Liveness: ``vg:inst:<iid>`` set with ``PX <instance TTL>`` every sixth of the TTL
  (one command per instance, not per session), deleted on a clean exit.
* Lease: ``owner`` and ``fence`` in the session hash, changed by one compare-and-set
  script that also checks the current owner's liveness key, so two instances can
  never both take a session from a dead owner. The commit script checks them
  (:meth:`RedisCluster.fenced_store`).
* Edge: ``edge`` and ``cepoch`` in the session hash; claiming it bumps the epoch and
  XADDs a ``takeover`` signal to the previous edge in the same script.
* Signals: one stream per instance, ``vg:ctl:<iid>``, read with ``XREAD BLOCK``.
* Follow: ``XREAD BLOCK`` on the session's event stream from the last seq seen (the
  entry ids are the seqs, so nothing is skipped or repeated); a jump means trimming.
* Inbox: ``vg:{sid}:i``, a stream the edge XADDs to and the owner reads; the owner
  records the last id it handled (``inbox_done``) so the next owner goes on from there.

Each blocking read holds one pooled connection for as long as it runs; followers
and inbox readers exist only while a turn straddles two instances.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self, cast

from redis.exceptions import RedisError

from gateway.cluster import (
    FollowGap,
    Held,
    Inbound,
    Lease,
    LeaseLost,
    Placement,
    Signal,
    SignalKind,
    UnknownSession,
    raise_if_cancelled,
)
from gateway.stores.base import SessionStore, StoredEvent, StoreError, TurnRecord
from gateway.stores.fenced import FencedStore
from gateway.stores.redis import (
    COMMIT_LEASE,
    INSTANCE_KEY,
    PREFIX,
    RedisStore,
    decode_events,
    key,
)
from gateway.tasks import TaskSet

log = logging.getLogger("gateway.cluster")

DEFAULT_INSTANCE_TTL_S = 3.0
INBOX_MAXLEN = 256
CTL_MAXLEN = 1024
_INST = INSTANCE_KEY
_CTL = f"{PREFIX}:ctl:"

# KEYS: meta; ARGV: me, liveness key prefix
# {-1} unknown session, {0, owner, fence, inbox_done} held by a live owner,
# {1, me, new fence, inbox_done} acquired.
ACQUIRE_LUA = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, '', 0, ''} end
local cur = redis.call('HMGET', KEYS[1], 'owner', 'fence', 'inbox_done')
local owner, fence, done = cur[1] or '', tonumber(cur[2] or '0'), cur[3] or '0-0'
if owner ~= '' and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. owner) == 1 then
  return {0, owner, fence, done}
end
fence = fence + 1
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'fence', fence)
return {1, ARGV[1], fence, done}
"""

# KEYS: meta; ARGV: me, fence, then what to do: 'release' or 'ack' <id>
LEASED_LUA = r"""
local cur = redis.call('HMGET', KEYS[1], 'owner', 'fence')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
if ARGV[3] == 'release' then
  redis.call('HSET', KEYS[1], 'owner', '')
else
  redis.call('HSET', KEYS[1], 'inbox_done', ARGV[4])
end
return 1
"""

# KEYS: meta; ARGV: me, session_id, ctl prefix, ctl maxlen, ctl ttl ms
# {-1, ''} unknown session, else {new epoch, previous edge}
CLAIM_EDGE_LUA = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
local epoch = redis.call('HINCRBY', KEYS[1], 'cepoch', 1)
local prev = redis.call('HGET', KEYS[1], 'edge') or ''
redis.call('HSET', KEYS[1], 'edge', ARGV[1])
if prev ~= '' then
  local ctl = ARGV[3] .. prev
  redis.call('XADD', ctl, 'MAXLEN', '~', ARGV[4], '*',
             'k', 'takeover', 's', ARGV[2], 'e', epoch, 'f', ARGV[1])
  redis.call('PEXPIRE', ctl, tonumber(ARGV[5]))
end
return {epoch, prev}
"""

# KEYS: meta; ARGV: me, epoch
LEAVE_EDGE_LUA = r"""
local cur = redis.call('HMGET', KEYS[1], 'edge', 'cepoch')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'edge', '')
return 1
"""


def new_instance_id() -> str:
    """A unique id for this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


#: The longest leaving waits for the heartbeat task to end.
STOP_S = 2.0


def _heartbeat_died(task: asyncio.Task[Any], exc: BaseException) -> None:
    log.error("%s died; this instance stops renewing its liveness", task.get_name(), exc_info=exc)


class RedisCluster:
    """A :class:`~gateway.cluster.Cluster` for instances sharing one Redis.

    ``instance_ttl_s`` is how long this instance counts as alive after its last
    heartbeat; ``block_s`` bounds each blocking read, so followers see an empty batch
    (and may check the owner) at least that often.
    """

    def __init__(
        self,
        store: RedisStore,
        *,
        instance_id: str | None = None,
        instance_ttl_s: float = DEFAULT_INSTANCE_TTL_S,
        block_s: float | None = None,
    ) -> None:
        self._store = store
        self._iid = instance_id or new_instance_id()
        self._ttl_ms = max(1, int(instance_ttl_s * 1000))
        block = instance_ttl_s / 3 if block_s is None else block_s
        self._block_ms = max(1, int(block * 1000))
        self._leases: dict[str, Lease] = {}
        self._tasks = TaskSet(f"cluster {self._iid}", on_error=_heartbeat_died)

    @property
    def instance_id(self) -> str:
        return self._iid

    @property
    def distributed(self) -> bool:
        return True

    @property
    def store(self) -> RedisStore:
        """The store this cluster's leases fence."""
        return self._store

    def _r(self) -> Any:
        return self._store.client

    async def _script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._r().eval(source, len(keys), *keys, *args)
        except RedisError as e:
            raise StoreError(f"Redis cluster {self._store.url}: {e}") from e

    # --- liveness -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._beat()
        self._tasks.spawn(self._beat_forever(), name="cluster-heartbeat")
        log.info("instance %s joined (liveness TTL %d ms)", self._iid, self._ttl_ms)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.aclose(timeout_s=STOP_S)
        try:
            released = await self.release_all()
            await self._r().delete(_INST + self._iid)
        except (RedisError, StoreError) as e:
            log.warning("instance %s left without releasing its sessions: %s", self._iid, e)
        else:
            log.info("instance %s left, %d sessions released", self._iid, released)

    async def _beat(self) -> None:
        try:
            await self._r().set(_INST + self._iid, b"1", px=self._ttl_ms)
        except RedisError as e:
            raise StoreError(f"Redis cluster {self._store.url}: {e}") from e

    async def _beat_forever(self) -> None:
        period = self._ttl_ms / 6000
        while True:
            await asyncio.sleep(period)
            try:
                await self._beat()
            except StoreError as e:
                raise_if_cancelled()
                log.warning("instance %s heartbeat failed: %s", self._iid, e)

    async def alive(self, instance_id: str) -> bool:
        if not instance_id:
            return False
        try:
            return bool(await self._r().exists(_INST + instance_id))
        except RedisError as e:
            raise StoreError(f"Redis cluster {self._store.url}: {e}") from e

    # --- ownership ----------------------------------------------------------------

    async def placement(self, session_id: str) -> Placement:
        try:
            vals = await self._r().hmget(
                key(session_id, "m"), ["token_hash", "owner", "fence", "edge", "cepoch"]
            )
        except RedisError as e:
            raise StoreError(f"Redis cluster {self._store.url}: {e}") from e
        if vals[0] is None:
            raise UnknownSession(session_id)
        owner = _text(vals[1] or b"")
        return Placement(
            owner=owner,
            fence=int(vals[2] or 0),
            owner_alive=await self.alive(owner),
            edge=_text(vals[3] or b""),
            epoch=int(vals[4] or 0),
        )

    async def acquire(self, session_id: str) -> Lease:
        got = await self._script(ACQUIRE_LUA, [key(session_id, "m")], [self._iid, _INST])
        status, fence, done = int(got[0]), int(got[2]), _text(got[3])
        if status < 0:
            raise UnknownSession(session_id)
        if status == 0:
            raise Held(await self.placement(session_id))
        lease = Lease(session_id, self._iid, fence, done)
        self._leases[session_id] = lease
        log.info("instance %s owns session %s (fence %d)", self._iid, session_id, fence)
        return lease

    async def release(self, lease: Lease) -> bool:
        if self._leases.get(lease.session_id) == lease:
            del self._leases[lease.session_id]
        done = await self._script(
            LEASED_LUA, [key(lease.session_id, "m")], [self._iid, lease.fence, "release"]
        )
        if done:
            await self._signal_edge(lease.session_id, "released")
        return bool(done)

    async def _signal_edge(self, session_id: str, kind: SignalKind) -> None:
        """Tell the session's edge, if it is another instance, about ``kind``."""
        placement = await self.placement(session_id)
        if placement.edge and placement.edge != self._iid:
            await self.notify(placement.edge, Signal(kind, session_id, placement.epoch, self._iid))

    async def release_all(self) -> int:
        released = 0
        for lease in list(self._leases.values()):
            try:
                released += await self.release(lease)
            except UnknownSession:
                continue
        return released

    def fenced_store(self, lease: Lease, store: SessionStore | None = None) -> SessionStore:
        target = self._store if store is None else store

        async def commit(
            session_id: str,
            *,
            events: Sequence[StoredEvent] = (),
            turns: Sequence[TurnRecord] = (),
            state: bytes | None = None,
            updated_at: float | None = None,
        ) -> None:
            token = COMMIT_LEASE.set((lease.instance_id, lease.fence))
            try:
                await target.commit(
                    session_id, events=events, turns=turns, state=state, updated_at=updated_at
                )
            finally:
                COMMIT_LEASE.reset(token)

        return FencedStore(target, commit)

    # --- edge ---------------------------------------------------------------------

    async def claim_edge(self, session_id: str) -> tuple[int, str]:
        got = await self._script(
            CLAIM_EDGE_LUA,
            [key(session_id, "m")],
            [self._iid, session_id, _CTL, CTL_MAXLEN, self._ctl_ttl_ms],
        )
        epoch, previous = int(got[0]), _text(got[1])
        if epoch < 0:
            raise UnknownSession(session_id)
        return epoch, previous

    @property
    def _ctl_ttl_ms(self) -> int:
        return max(60_000, 20 * self._ttl_ms)

    async def leave_edge(self, session_id: str, epoch: int) -> bool:
        return bool(await self._script(LEAVE_EDGE_LUA, [key(session_id, "m")], [self._iid, epoch]))

    # --- streams ------------------------------------------------------------------

    async def _xread(self, stream: str, after: str) -> list[Any]:
        try:
            got = await self._r().xread({stream: after}, block=self._block_ms)
        except RedisError as e:
            raise_if_cancelled()
            raise StoreError(f"Redis cluster {self._store.url}: {e}") from e
        raise_if_cancelled()
        return cast(list[Any], got[0][1]) if got else []

    async def follow(self, session_id: str, after_seq: int) -> AsyncIterator[list[StoredEvent]]:
        first = await self._store.first_seq(session_id)
        if first is not None and first > after_seq + 1:
            raise FollowGap(f"session {session_id!r}: events after {after_seq} were trimmed")
        last = after_seq
        stream = key(session_id, "e")
        while True:
            batch = decode_events(await self._xread(stream, f"{max(last, 0)}-0"))
            if batch and batch[0].seq != last + 1:
                raise FollowGap(
                    f"session {session_id!r}: got seq {batch[0].seq} after {last} (trimmed)"
                )
            if batch:
                last = batch[-1].seq
            yield batch

    async def forward(self, session_id: str, epoch: int, data: bytes) -> None:
        inbox = key(session_id, "i")
        try:
            async with self._r().pipeline(transaction=True) as pipe:
                pipe.xadd(inbox, {"e": epoch, "d": data}, maxlen=INBOX_MAXLEN, approximate=True)
                pipe.pexpire(inbox, self._store.ttl_ms)
                await pipe.execute()
        except RedisError as e:
            raise StoreError(f"Redis cluster {self._store.url}: {e}") from e

    async def inbox(self, lease: Lease) -> AsyncIterator[Inbound]:
        stream = key(lease.session_id, "i")
        after = lease.inbox_after or "0-0"
        while True:
            for entry_id, fields in await self._xread(stream, after):
                yield Inbound(_text(entry_id), int(fields[b"e"]), bytes(fields[b"d"]))
                after = _text(entry_id)
                await self._ack(lease, after)

    async def pending_input(self, lease: Lease) -> list[Inbound]:
        stream = key(lease.session_id, "i")
        try:
            done = await self._r().hget(key(lease.session_id, "m"), "inbox_done")
            entries = await self._r().xrange(stream, f"({_text(done or b'0-0')}", "+")
        except RedisError as e:
            raise StoreError(f"Redis cluster {self._store.url}: {e}") from e
        if entries:
            await self._ack(lease, _text(entries[-1][0]))
        return [
            Inbound(_text(entry_id), int(fields[b"e"]), bytes(fields[b"d"]))
            for entry_id, fields in entries
        ]

    async def _ack(self, lease: Lease, entry_id: str) -> None:
        handled = await self._script(
            LEASED_LUA, [key(lease.session_id, "m")], [self._iid, lease.fence, "ack", entry_id]
        )
        if not handled:
            raise LeaseLost(f"session {lease.session_id!r}: lease {lease.fence} lost")

    async def notify(self, instance_id: str, signal: Signal) -> None:
        ctl = _CTL + instance_id
        fields = {"k": signal.kind, "s": signal.session_id, "e": signal.epoch, "f": signal.sender}
        try:
            async with self._r().pipeline(transaction=True) as pipe:
                pipe.xadd(ctl, fields, maxlen=CTL_MAXLEN, approximate=True)
                pipe.pexpire(ctl, self._ctl_ttl_ms)
                await pipe.execute()
        except RedisError as e:
            raise StoreError(f"Redis cluster {self._store.url}: {e}") from e

    async def signals(self) -> AsyncIterator[Signal]:
        ctl = _CTL + self._iid
        after = "0-0"
        while True:
            for entry_id, fields in await self._xread(ctl, after):
                after = _text(entry_id)
                yield Signal(
                    kind=cast(SignalKind, _text(fields[b"k"])),
                    session_id=_text(fields[b"s"]),
                    epoch=int(fields[b"e"]),
                    sender=_text(fields[b"f"]),
                )
