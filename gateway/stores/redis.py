"""Redis session store: the distributed mode (``GATEWAY_STORE=redis://…`` or ``rediss://…``).

Built on redis-py's asyncio client (with hiredis parsing). Per session, under a hash
tag ``{sid}`` so that its keys share one cluster slot:

==================  ======  ==========================================================
key                 type    holds
==================  ======  ==========================================================
``vg:{sid}:m``      HASH    ``token_hash principal created_at updated_at last_seq state
                            turns owner fence edge cepoch inbox_done`` (the lease
                            and the edge, see :mod:`gateway.stores.redis_cluster`)
``vg:{sid}:e``      STREAM  the event log; entry id ``<seq>-0``, fields ``t`` (type),
                            ``u`` (turn id, absent for none), ``d`` (the JSON as sent)
``vg:{sid}:t``      HASH    ``turn_id -> <insertion ordinal> <TurnRecord JSON>``
``vg:{sid}:i``      STREAM  client input an edge forwards to the owner (the inbox)
``vg:inst:<iid>``   STRING  the instance is alive (``PX`` the instance TTL)
``vg:ctl:<iid>``    STREAM  signals to that instance (takeover, released, …)
``vg:idx:created``  ZSET    every session by ``created_at`` (``list_sessions``)
``vg:idx:p:<who>``  ZSET    one principal's sessions by ``created_at``
``vg:idx:updated``  ZSET    every session by ``updated_at`` (``expire``)
``vg:{sid}:o``      SET     the session's turns still streaming
``vg:idx:streaming`` SET    sessions with a turn still streaming (crash recovery)
==================  ======  ==========================================================

A commit is one Lua script, so it is exactly as atomic as the SQLite transaction: it
validates the whole batch before its first write (a Lua error does not roll back),
checks the lease's fencing token, checks that the events continue ``last_seq`` (the
stream ids ``<seq>-0`` make Redis itself refuse a repeated or regressed seq too), then
appends, upserts turns, replaces the state and refreshes every key's TTL. The client
retries a command whose connection broke (riding out a Redis restart), so a script
may run twice: a batch whose events are all stored already, byte for byte, is
answered as done.

The stream is trimmed by ``XADD MAXLEN ~ <replay window>`` (whole nodes, cheap) and
exactly by :meth:`RedisStore.trim_events`; every key expires with the session TTL.
The global indexes are written in the same scripts, so Redis Cluster is not supported
(one primary, with Sentinel or a managed failover, is).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import asdict
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.stores.base import (
    Fenced,
    SessionMeta,
    StoredEvent,
    StoredSession,
    StoreError,
    TurnRecord,
    check_batch,
)

PREFIX = "vg"
DEFAULT_TTL_S = 86400.0
DEFAULT_MAX_EVENTS = 1024
LIST_PAGE = 100

log = logging.getLogger("gateway.stores.redis")

#: A command whose connection broke is retried this often (about 2 s in all), which
#: rides out a Redis restart; longer outages surface as ``StoreError``.
RETRIES = 8
SOCKET_TIMEOUT_S = 5.0
#: The client's connection pool: one connection per command in flight. redis-py's
#: default pool refuses the 101st (``Too many connections``, retried with backoff): one
#: worker with 200–300 sessions streaming went past it and queued its commits for
#: seconds. This pool is larger and, when it is full, a command waits (up to
#: ``SOCKET_TIMEOUT_S``) for a connection instead of failing; bounded, so that a burst
#: cannot take the file descriptors the gateway's clients need.
MAX_CONNECTIONS = 512
#: The longest closing the pool may take: redis-py can wait for a socket's close
#: that never completes, and a shutdown must not hang on it.
CLOSE_TIMEOUT_S = 5.0

_PASSWORD = re.compile(r"(?<=://)([^/@]*)@")

#: The lease (owner, fence) the commits of the current task are fenced by, so that
#: a fenced write can go through the store wrappers above this backend (budgets,
#: metrics) unchanged; see :meth:`gateway.stores.redis_cluster.RedisCluster.fenced_store`.
COMMIT_LEASE: ContextVar[tuple[str, int] | None] = ContextVar("commit_lease", default=None)


__all__ = ["Fenced", "RedisStore", "key", "mask_url"]


def mask_url(url: str) -> str:
    """``url`` with any user:password part replaced by ``***`` (safe to log)."""
    return _PASSWORD.sub("***@", url, count=1)


# KEYS: meta, events, turns, idx_updated, open turns, idx_streaming
# ARGV: session_id, owner, fence, maxlen, ttl_ms, updated_at ('' = keep), has_state,
#       state, n_events, then 5 per event (seq, type, has_turn, turn_id, data),
#       then n_turns, then 3 per turn (turn_id, json, '1' if it streams)
COMMIT_LUA = r"""
local meta, ev, turns, idx, open, streaming = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if redis.call('EXISTS', meta) == 0 then return 0 end
local cur = redis.call('HMGET', meta, 'owner', 'fence', 'last_seq')
local owner = cur[1] or ''
if owner ~= ARGV[2] or (owner ~= '' and (cur[2] or '0') ~= ARGV[3]) then
  return redis.error_reply('FENCED owner=' .. owner .. ' fence=' .. tostring(cur[2]))
end
local last = tonumber(cur[3] or '0')
local n = tonumber(ARGV[9])
if n > 0 then
  local first = tonumber(ARGV[10])
  if first >= 1 and first + n - 1 <= last then
    -- Maybe a retry of a batch whose reply was lost: done if stored byte for byte.
    local got = redis.call('XRANGE', ev, first .. '-0', (first + n - 1) .. '-0')
    local same = #got == n
    for k = 0, n - 1 do
      if not same then break end
      local i = 10 + 5 * k
      local f = got[k + 1][2]
      local data
      for x = 1, #f, 2 do if f[x] == 'd' then data = f[x + 1] end end
      same = tonumber(ARGV[i]) == first + k and data == ARGV[i + 4]
    end
    if same then return -2 end
  end
  for k = 0, n - 1 do
    local seq = tonumber(ARGV[10 + 5 * k])
    if seq ~= last + 1 + k then
      return redis.error_reply('SEQ ' .. tostring(seq) .. ' ' .. (last + 1 + k))
    end
  end
end
for k = 0, n - 1 do
  local i = 10 + 5 * k
  if ARGV[i + 2] == '1' then
    redis.call('XADD', ev, 'MAXLEN', '~', ARGV[4], ARGV[i] .. '-0',
               't', ARGV[i + 1], 'u', ARGV[i + 3], 'd', ARGV[i + 4])
  else
    redis.call('XADD', ev, 'MAXLEN', '~', ARGV[4], ARGV[i] .. '-0',
               't', ARGV[i + 1], 'd', ARGV[i + 4])
  end
end
local j = 10 + 5 * n
local nt = tonumber(ARGV[j])
for k = 0, nt - 1 do
  local id, body = ARGV[j + 1 + 3 * k], ARGV[j + 2 + 3 * k]
  if ARGV[j + 3 + 3 * k] == '1' then
    redis.call('SADD', open, id)
  else
    redis.call('SREM', open, id)
  end
  local old = redis.call('HGET', turns, id)
  local ordinal
  if old then
    ordinal = string.match(old, '^(%d+) ')
  else
    ordinal = redis.call('HINCRBY', meta, 'turns', 1)
  end
  redis.call('HSET', turns, id, ordinal .. ' ' .. body)
end
if n > 0 then redis.call('HSET', meta, 'last_seq', last + n) end
if ARGV[7] == '1' then redis.call('HSET', meta, 'state', ARGV[8]) end
if ARGV[6] ~= '' then
  redis.call('HSET', meta, 'updated_at', ARGV[6])
  redis.call('ZADD', idx, ARGV[6], ARGV[1])
end
local ttl = tonumber(ARGV[5])
redis.call('PEXPIRE', meta, ttl)
if n > 0 or redis.call('EXISTS', ev) == 1 then redis.call('PEXPIRE', ev, ttl) end
if nt > 0 then
  redis.call('PEXPIRE', turns, ttl)
  if redis.call('SCARD', open) > 0 then
    redis.call('PEXPIRE', open, ttl)
    redis.call('SADD', streaming, ARGV[1])
  else
    redis.call('SREM', streaming, ARGV[1])
  end
end
return last + n
"""

# KEYS: meta, events, turns, inbox, idx_created, idx_updated, open turns, idx_streaming
# ARGV: session_id, idle_before ('' = unconditional), principal index prefix
# Returns 1 if deleted, 0 if unknown (or, with idle_before, no longer idle).
DELETE_LUA = r"""
local meta = KEYS[1]
local vals = redis.call('HMGET', meta, 'updated_at', 'principal')
if not vals[1] then
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[6], ARGV[1])
  return 0
end
if ARGV[2] ~= '' and tonumber(vals[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', meta, KEYS[2], KEYS[3], KEYS[4], KEYS[7])
redis.call('SREM', KEYS[8], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
if vals[2] then redis.call('ZREM', ARGV[3] .. vals[2], ARGV[1]) end
return 1
"""

# KEYS: meta, idx_created, idx_updated, idx_principal (or idx_created again)
# ARGV: session_id, ttl_ms, created_at, updated_at, token_hash, has_principal, principal, state
CREATE_LUA = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'token_hash', ARGV[5], 'created_at', ARGV[3],
           'updated_at', ARGV[4], 'last_seq', 0, 'state', ARGV[8], 'turns', 0,
           'owner', '', 'fence', 0)
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'principal', ARGV[7])
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
"""


def key(session_id: str, kind: str) -> str:
    """The Redis key of one of a session's structures (``m``, ``e``, ``t``, …)."""
    return f"{PREFIX}:{{{session_id}}}:{kind}"


_IDX_CREATED = f"{PREFIX}:idx:created"
_IDX_UPDATED = f"{PREFIX}:idx:updated"
_IDX_PRINCIPAL = f"{PREFIX}:idx:p:"
_IDX_STREAMING = f"{PREFIX}:idx:streaming"
#: ``INSTANCE_KEY + iid`` exists while that instance is alive (see redis_cluster).
INSTANCE_KEY = f"{PREFIX}:inst:"


def _streams(turn: TurnRecord) -> bool:
    return turn.status in (None, "streaming")


def decode_events(entries: list[Any]) -> list[StoredEvent]:
    """Stream entries (``<seq>-0``, fields ``t u d``) as stored events."""
    out: list[StoredEvent] = []
    for entry_id, fields in entries:
        turn = fields.get(b"u")
        out.append(
            StoredEvent(
                seq=int(entry_id.split(b"-", 1)[0]),
                type=fields[b"t"].decode(),
                turn_id=None if turn is None else turn.decode(),
                data=fields[b"d"].decode(),
            )
        )
    return out


def _float(raw: bytes) -> float:
    return float(raw.decode())


class RedisStore:
    """A :class:`~gateway.stores.base.SessionStore` on one Redis 7 primary.

    Construct with the URL (no I/O), then ``await store.open()``. Semantics are those
    of :class:`~gateway.stores.memory.MemoryStore`; in addition a commit may carry a
    lease (see :mod:`gateway.stores.redis_cluster`) and is refused with
    :class:`Fenced` once the lease is no longer the session's. A commit with no lease
    is accepted only while nobody owns the session.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        self._url = url
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._max_events = max_events
        self._redis: aioredis.Redis | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """The URL with its password masked."""
        return mask_url(self._url)

    @property
    def ttl_ms(self) -> int:
        """How long a session's keys live after its last commit."""
        return self._ttl_ms

    @property
    def client(self) -> aioredis.Redis:
        """The open client (for the cluster primitives sharing this connection pool)."""
        if self._redis is None:
            state = "closed" if self._closed else "not open (await open() first)"
            raise StoreError(f"Redis store {self.url} is {state}")
        return self._redis

    async def open(self) -> None:
        """Connect and check the server answers; a no-op if already open."""
        if self._closed:
            raise StoreError("Redis store is closed")
        if self._redis is not None:
            return
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url,
                max_connections=MAX_CONNECTIONS,
                timeout=SOCKET_TIMEOUT_S,
                decode_responses=False,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=SOCKET_TIMEOUT_S,
                retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.02), RETRIES),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
            client = aioredis.Redis.from_pool(pool)
        except ValueError as e:
            raise StoreError(f"bad Redis URL {self.url}: {e}") from e
        try:
            await client.ping()
        except RedisError as e:
            await client.aclose()
            raise StoreError(f"cannot reach Redis at {self.url}: {e}") from e
        self._commit = client.register_script(COMMIT_LUA)
        self._delete = client.register_script(DELETE_LUA)
        self._create = client.register_script(CREATE_LUA)
        self._redis = client

    async def aclose(self) -> None:
        """Close the connection pool; later calls raise ``StoreError``. Idempotent."""
        self._closed = True
        client, self._redis = self._redis, None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.aclose(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "Redis store %s: its connections did not close within %g s; "
                "left to the operating system",
                self.url,
                CLOSE_TIMEOUT_S,
            )

    def _error(self, e: RedisError) -> StoreError:
        return StoreError(f"Redis store {self.url}: {e}")

    # --- SessionStore -----------------------------------------------------------------

    async def create(self, meta: SessionMeta, state: bytes) -> None:
        sid = meta.session_id
        principal_key = (
            _IDX_PRINCIPAL + meta.principal if meta.principal is not None else _IDX_CREATED
        )
        try:
            created = await self._create(
                keys=[key(sid, "m"), _IDX_CREATED, _IDX_UPDATED, principal_key],
                args=[
                    sid,
                    self._ttl_ms,
                    repr(meta.created_at),
                    repr(meta.updated_at),
                    meta.token_hash,
                    "0" if meta.principal is None else "1",
                    meta.principal or "",
                    bytes(state),
                ],
                client=self.client,
            )
        except RedisError as e:
            raise self._error(e) from e
        if not created:
            raise StoreError(f"session {sid!r} already exists")

    async def get(self, session_id: str) -> StoredSession | None:
        try:
            vals: list[Any] = await self.client.hmget(
                key(session_id, "m"),
                ["token_hash", "principal", "created_at", "updated_at", "state"],
            )
        except RedisError as e:
            raise self._error(e) from e
        if vals[0] is None:
            return None
        return StoredSession(meta=self._meta(session_id, vals), state=bytes(vals[4] or b""))

    @staticmethod
    def _meta(session_id: str, vals: list[Any]) -> SessionMeta:
        return SessionMeta(
            session_id=session_id,
            token_hash=vals[0].decode(),
            principal=None if vals[1] is None else vals[1].decode(),
            created_at=_float(vals[2]),
            updated_at=_float(vals[3]),
        )

    async def commit(
        self,
        session_id: str,
        *,
        events: Sequence[StoredEvent] = (),
        turns: Sequence[TurnRecord] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
        lease: tuple[str, int] | None = None,
    ) -> None:
        """As the protocol says; ``lease`` (owner, fence) fences the commit (``Fenced``)."""
        check_batch(session_id, events[0].seq - 1 if events else 0, events, turns)
        owner, fence = lease or COMMIT_LEASE.get() or ("", 0)
        args: list[Any] = [
            session_id,
            owner,
            fence,
            self._max_events,
            self._ttl_ms,
            "" if updated_at is None else repr(updated_at),
            "0" if state is None else "1",
            b"" if state is None else bytes(state),
            len(events),
        ]
        for e in events:
            has_turn = e.turn_id is not None
            args += [e.seq, e.type, "1" if has_turn else "0", e.turn_id or "", e.data]
        args.append(len(turns))
        for t in turns:
            args += [t.turn_id, orjson.dumps(asdict(t)), "1" if _streams(t) else "0"]
        keys = [
            key(session_id, "m"),
            key(session_id, "e"),
            key(session_id, "t"),
            _IDX_UPDATED,
            key(session_id, "o"),
            _IDX_STREAMING,
        ]
        try:
            await self._commit(keys=keys, args=args, client=self.client)
        except ResponseError as e:
            text = str(e)
            if text.startswith("FENCED"):
                raise Fenced(f"session {session_id!r}: commit refused, {text}") from e
            if text.startswith("SEQ"):
                _, got, expected = text.split()
                raise StoreError(
                    f"session {session_id!r}: event seq {got} does not continue the log "
                    f"(expected {expected})"
                ) from e
            raise self._error(e) from e
        except RedisError as e:
            raise self._error(e) from e

    async def read_events(
        self, session_id: str, after_seq: int, limit: int | None = None
    ) -> list[StoredEvent]:
        if limit is not None and limit <= 0:
            return []
        try:
            entries: list[Any] = await self.client.xrange(  # type: ignore[assignment]
                key(session_id, "e"), f"({max(after_seq, 0)}-0", "+", count=limit
            )
        except RedisError as e:
            raise self._error(e) from e
        return decode_events(entries)

    async def first_seq(self, session_id: str) -> int | None:
        try:
            entries: list[Any] = await self.client.xrange(  # type: ignore[assignment]
                key(session_id, "e"), "-", "+", count=1
            )
        except RedisError as e:
            raise self._error(e) from e
        return int(entries[0][0].split(b"-", 1)[0]) if entries else None

    async def trim_events(self, session_id: str, keep_last: int) -> None:
        """Drop all but the newest ``keep_last`` events; ``ValueError`` if negative."""
        if keep_last < 0:
            raise ValueError("keep_last must not be negative")
        try:
            await self.client.xtrim(key(session_id, "e"), maxlen=keep_last, approximate=False)
        except RedisError as e:
            raise self._error(e) from e

    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        try:
            raw: list[bytes] = await self.client.hvals(key(session_id, "t"))  # type: ignore[assignment]
        except RedisError as e:
            raise self._error(e) from e
        ordered: list[tuple[float, int, TurnRecord]] = []
        for value in raw:
            ordinal, _, body = value.partition(b" ")
            record = TurnRecord(**orjson.loads(body))
            ordered.append((record.started_at, int(ordinal), record))
        ordered.sort(key=lambda item: item[:2])
        return [record for _, _, record in ordered]

    async def list_sessions(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        principal: str | None = None,
    ) -> list[SessionMeta]:
        if limit <= 0:
            return []
        index = _IDX_CREATED if principal is None else _IDX_PRINCIPAL + principal
        top: float | str = "+inf" if before is None else before[0]
        found: list[SessionMeta] = []
        offset = 0
        try:
            while len(found) < limit:
                page: list[Any] = await self.client.zrevrangebyscore(
                    index, top, "-inf", start=offset, num=LIST_PAGE, withscores=True
                )
                if not page:
                    break
                offset += len(page)
                # Equal scores come in descending id order, as the cursor wants them.
                ids = [
                    member.decode()
                    for member, score in page
                    if before is None or (score, member.decode()) < before
                ]
                found += await self._metas(index, ids)
        except RedisError as e:
            raise self._error(e) from e
        return found[:limit]

    async def _metas(self, index: str, ids: list[str]) -> list[SessionMeta]:
        """The metadata of ``ids`` in order; ids whose keys expired leave the index."""
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hmget(key(sid, "m"), ["token_hash", "principal", "created_at", "updated_at"])
            rows = cast(list[list[Any]], await pipe.execute())
        metas: list[SessionMeta] = []
        gone: list[str] = []
        for sid, vals in zip(ids, rows, strict=True):
            if vals[0] is None:
                gone.append(sid)
            else:
                metas.append(self._meta(sid, vals))
        if gone:
            await self.client.zrem(index, *gone)
        return metas

    async def _delete_one(self, session_id: str, idle_before: float | None) -> bool:
        keys = [
            key(session_id, "m"),
            key(session_id, "e"),
            key(session_id, "t"),
            key(session_id, "i"),
            _IDX_CREATED,
            _IDX_UPDATED,
            key(session_id, "o"),
            _IDX_STREAMING,
        ]
        args = [session_id, "" if idle_before is None else repr(idle_before), _IDX_PRINCIPAL]
        return bool(await self._delete(keys=keys, args=args, client=self.client))

    async def delete(self, session_id: str) -> bool:
        try:
            return await self._delete_one(session_id, None)
        except RedisError as e:
            raise self._error(e) from e

    async def expire(self, idle_before: float) -> list[str]:
        try:
            idle: list[bytes] = await self.client.zrangebyscore(  # type: ignore[assignment]
                _IDX_UPDATED, "-inf", f"({idle_before!r}"
            )
            expired: list[str] = []
            for raw in idle:
                sid = raw.decode()
                if await self._delete_one(sid, idle_before):
                    expired.append(sid)
        except RedisError as e:
            raise self._error(e) from e
        return expired

    async def streaming_sessions(self) -> list[str]:
        """Sessions with a turn still streaming whose owner is gone (none, or an
        instance whose liveness expired): what a crash left open. Sessions a live
        instance runs are not listed."""
        try:
            members: list[bytes] = await self.client.smembers(_IDX_STREAMING)  # type: ignore[assignment]
            ids = sorted(m.decode() for m in members)
            if not ids:
                return []
            async with self.client.pipeline(transaction=False) as pipe:
                for sid in ids:
                    pipe.hmget(key(sid, "m"), ["token_hash", "owner"])
                rows = cast(list[list[Any]], await pipe.execute())
            orphaned: list[str] = []
            for sid, (token_hash, owner) in zip(ids, rows, strict=True):
                if token_hash is None:
                    await self.client.srem(_IDX_STREAMING, sid)
                elif not owner or not await self.client.exists(INSTANCE_KEY + owner.decode()):
                    orphaned.append(sid)
        except RedisError as e:
            raise self._error(e) from e
        return orphaned

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except RedisError as e:
            raise self._error(e) from e
