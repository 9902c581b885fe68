"""The sessions of this process: made, resumed, restored from the store, dropped.

Live sessions are held while a client is attached and for a grace period after;
everything else lives in the store and comes back on resume. Resume tokens are
stored as SHA-256 hashes and compared in constant time.

Everything that makes, restores, deletes or expires one session holds that
session's lock, and attaching a client happens under it with no ``await`` in
between, so a client never attaches to a runtime that stopped meanwhile and a
delete never crosses a restore. An ended session is over: resuming it is
refused with 4410.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson

from gateway.cluster import Cluster, Held, Inbound, raise_if_cancelled
from gateway.cluster_local import LocalCluster
from gateway.core.codes import CloseCode
from gateway.core.events import ServerEvent
from gateway.core.replay import ReplayLog
from gateway.core.session import Session, SessionConfig
from gateway.core.state import decode_state, encode_state
from gateway.errors import (
    Fenced,
    ResumeRefused,
    RuntimeStopped,
    StateError,
    StoreError,
    TooManySessions,
)
from gateway.generation import ProviderPolicy
from gateway.ownership import Ownership
from gateway.pipeline import StorePolicy
from gateway.providers.base import LLMProvider
from gateway.relay import Relay
from gateway.runtime import ClientSink, SessionRuntime
from gateway.stores.base import SessionMeta, SessionStore, StoredSession
from gateway.tenants import platform_principal
from gateway.tools.webhook import ToolRunner

__all__ = ["ManagerConfig", "ResumeRefused", "SessionManager", "TooManySessions"]

log = logging.getLogger("gateway.sessions")

#: Sessions read per store call when counting a caller's sessions.
_COUNT_PAGE = 64


def new_session_id() -> str:
    """A random, URL-safe session id."""
    return "s_" + secrets.token_urlsafe(12)


def new_resume_token() -> str:
    """A random secret a client presents to resume its session."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the store keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    """Constant-time check of a presented token against a stored hash."""
    return hmac.compare_digest(hash_token(token).encode(), token_hash.encode())


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """How sessions are run and kept."""

    session: SessionConfig
    max_sessions_per_principal: int = 100
    replay_capacity: int = 1024
    grace_s: float = 30.0
    provider: ProviderPolicy = ProviderPolicy()
    store: StorePolicy = StorePolicy()
    #: How long a resume on this instance waits for the instance that owns the
    #: session to hand it over (it finishes its streaming turn first) or to die.
    handover_s: float = 25.0
    #: Runs the server tools (webhooks); ``None``: there are none.
    tools: ToolRunner | None = None


class SessionManager:
    """Makes, resumes and drops session runtimes."""

    def __init__(
        self,
        *,
        provider: LLMProvider,
        store: SessionStore,
        config: ManagerConfig,
        clock: Callable[[], float] = time.time,
        cluster: Cluster | None = None,
        ephemeral_store: Callable[[SessionStore], SessionStore] | None = None,
    ) -> None:
        """``ephemeral_store`` wraps the store of each one-request session (so that
        their turns are measured like the others)."""
        self._provider = provider
        self._wrap_ephemeral = ephemeral_store
        self._store = store
        self._config = config
        self._clock = clock
        self._live: dict[str, SessionRuntime] = {}
        self._locks = _KeyedLocks()
        self._cluster: Cluster = cluster or LocalCluster(store)
        self._relays: set[Relay] = set()
        self._placement = Ownership(self._cluster, store, self._live, handover_s=config.handover_s)
        #: The back-off jitter of every runtime: one generator, not 2.5 KiB of state each.
        self._random = random.Random()

    def __len__(self) -> int:
        return len(self._live)

    def live(self, session_id: str) -> SessionRuntime | None:
        """The live runtime of a session, if this process runs it now."""
        runtime = self._live.get(session_id)
        return None if runtime is None or runtime.stopping else runtime

    async def create(self, *, principal: str | None = None) -> tuple[str, str, float]:
        """Store a new, empty session; returns its id, resume token and creation time.

        Raises :class:`TooManySessions` when ``principal`` owns the maximum already.
        """
        if principal is not None:
            limit = self._config.max_sessions_per_principal
            if await self._owned(principal, limit) >= limit:
                raise TooManySessions(f"at most {limit} sessions per caller; delete some")
        session_id, token = new_session_id(), new_resume_token()
        now = self._clock()
        state = Session(session_id, self._config.session).state()
        meta = SessionMeta(session_id, hash_token(token), principal, now, now)
        await self._store.create(meta, encode_state(state))
        return session_id, token, now

    async def _owned(self, principal: str, limit: int) -> int:
        """The sessions ``principal`` has stored, counted up to ``limit``, a page at a
        time: listing up to ``limit`` at once was a transient of that many rows for
        every session opened, and the heap kept its peak (16 KiB of RSS per idle
        session with 1000 sessions of one caller open)."""
        count, before = 0, None
        while count < limit:
            want = min(_COUNT_PAGE, limit - count)
            page = await self._store.list_sessions(limit=want, before=before, principal=principal)
            count += len(page)
            if len(page) < want:
                break
            before = (page[-1].created_at, page[-1].session_id)
        return count

    async def start(
        self, client: ClientSink, *, principal: str | None = None
    ) -> tuple[SessionRuntime, str]:
        """A new live session with ``client`` attached, and its resume token."""
        session_id, token, _ = await self.create(principal=principal)
        await self._placement.claim(session_id, client)
        await self._placement.own(session_id)
        session = Session(session_id, self._config.session)
        replay = ReplayLog(self._config.replay_capacity)
        runtime = self._run(session, hash_token(token), replay, principal)
        runtime.attach(client, resume_token=token, last_seq=None)
        return runtime, token

    async def open_keyed(self, kind: str, key: str) -> SessionRuntime:
        """The session a platform names by its own id (a call SID, a conversation id).

        Made on first use, resumed after: the platform authenticates itself (its
        own signature), so no resume token is involved. ``kind`` keeps platforms
        apart (``twilio``, ``retell``, ``layercode``).
        """
        session_id = keyed_session_id(kind, key)
        async with self._locks.hold(session_id):
            runtime = await self._running(session_id)
            if runtime is not None:
                return runtime
            stored = await self._store.get(session_id)
            if stored is not None:
                return await self._restore_stored(stored)
            now = self._clock()
            session = Session(session_id, self._config.session)
            owner = platform_principal(kind)  # never a caller's name (gateway.tenants)
            meta = SessionMeta(session_id, hash_token(new_resume_token()), owner, now, now)
            await self._store.create(meta, encode_state(session.state()))
            await self._placement.own(session_id)
            replay = ReplayLog(self._config.replay_capacity)
            return self._run(session, meta.token_hash, replay, owner)

    async def attach_keyed(
        self,
        kind: str,
        key: str,
        client: ClientSink,
        *,
        before: Callable[[SessionRuntime], None] | None = None,
    ) -> SessionRuntime:
        """:meth:`open_keyed`, then attach ``client`` with no ``await`` in between;
        ``before(runtime)`` runs just before the attach (to prepare the client)."""
        while True:
            runtime = await self.open_keyed(kind, key)
            if before is not None:
                before(runtime)
            try:
                runtime.attach(client, resume_token="", last_seq=None)
            except RuntimeStopped:
                continue  # it stopped between the two: open it afresh
            return runtime

    def ephemeral(self, store: SessionStore) -> SessionRuntime:
        """A session that lives for one request only (stateless platforms), kept in
        ``store`` (a fresh ``MemoryStore``) and never listed."""
        session = Session(new_session_id(), self._config.session)
        runtime = SessionRuntime(
            session,
            token_hash="",
            provider=self._provider,
            store=store if self._wrap_ephemeral is None else self._wrap_ephemeral(store),
            clock=self._clock,
            replay=ReplayLog(self._config.replay_capacity),
            grace_s=0.0,
            on_stopped=lambda _: None,
            policy=self._config.provider,
            store_policy=self._config.store,
            rng=self._random,
            tools=self._config.tools,
        )
        return runtime

    async def resume(
        self,
        session_id: str,
        token: str,
        client: ClientSink,
        *,
        last_seq: int,
        principal: str | None = None,
    ) -> SessionRuntime:
        """The session's runtime, live or brought back from the store, with
        ``client`` attached (the replay after ``last_seq`` follows ``session.ready``).

        Raises :class:`ResumeRefused` for an unknown session, a wrong token, a
        session of another principal (reported as unknown, so ids do not leak),
        or a session that has ended (4410). With several instances, one that
        another live instance runs is waited for until it is handed over.
        """
        resumed = await self._resume(session_id, token, client, last_seq, principal, False)
        assert isinstance(resumed, SessionRuntime)
        return resumed

    async def resume_or_follow(
        self,
        session_id: str,
        token: str,
        client: ClientSink,
        *,
        last_seq: int,
        principal: str | None = None,
    ) -> SessionRuntime | Relay:
        """:meth:`resume`, except that a session another live instance runs is
        relayed from it, live, until it is handed over (see :mod:`gateway.relay`)."""
        return await self._resume(session_id, token, client, last_seq, principal, True)

    async def _resume(
        self,
        session_id: str,
        token: str,
        client: ClientSink,
        last_seq: int,
        principal: str | None,
        follow: bool,
    ) -> SessionRuntime | Relay:
        async with self._locks.hold(session_id):
            runtime = await self._running(session_id)
            if runtime is not None:
                if principal is not None and runtime.principal != principal:
                    raise ResumeRefused(CloseCode.UNKNOWN_SESSION, "unknown session")
                if not token_matches(token, runtime.token_hash):
                    raise ResumeRefused(CloseCode.BAD_RESUME_TOKEN, "wrong resume token")
            else:
                stored = await self._check(session_id, token, principal)
            if self._cluster.distributed:
                # Tell the older socket, on whatever instance, to close (4409).
                epoch = await self._placement.claim(session_id, client)
                runtime = await self._running(session_id)
                if runtime is None:
                    if not follow:
                        await self._placement.own(session_id, epoch=epoch)
                    elif await self._placement.try_own(session_id, epoch) is not None:
                        return await self._relay(session_id, client, token, last_seq, epoch)
                    runtime = await self._restore_owned(session_id)
            elif runtime is None:
                runtime = await self._restore_stored(stored)
            runtime.attach(client, resume_token=token, last_seq=last_seq)
            return runtime

    async def _relay(
        self, session_id: str, client: ClientSink, token: str, last_seq: int, epoch: int
    ) -> Relay:
        """Serve ``client`` from here while the live owner elsewhere streams."""
        stored = await self._store.get(session_id)
        if stored is None:
            raise ResumeRefused(CloseCode.UNKNOWN_SESSION, "unknown session")
        try:
            state = decode_state(stored.state)
        except StateError as exc:
            raise ResumeRefused(CloseCode.INTERNAL_ERROR, "the session cannot be restored") from exc
        if state.ended:
            raise ResumeRefused(CloseCode.SESSION_ENDED, "the session has ended")
        first = await self._store.first_seq(session_id)
        events = await self._store.read_events(session_id, 0 if first is None else first - 1)
        delivered = events[-1].seq if events else state.seq
        view = Session.restore(
            session_id,
            self._config.session,
            state,
            last_seq=delivered,
            open_turn_chunks=(),
            now=self._clock(),
        )
        missed = last_seq > delivered or (first is not None and last_seq < first - 1)
        since = delivered if missed else last_seq
        greeting: list[ServerEvent] = [view.ready_event(token, resumed=True, seq=since)]
        if missed:
            greeting.append(view.resync_event(delivered))
        self._relays = {r for r in self._relays if not r.done}
        relay = Relay(
            session_id,
            client,
            cluster=self._cluster,
            epoch=epoch,
            last_seq=since,
            resume_token=token,
            take_over=lambda: self._take_over(session_id),
            greeting=greeting,
            on_left=lambda epoch: self._placement.relay_left(session_id, epoch),
        )
        self._relays.add(relay)
        log.info("session=%s relayed from its owner from seq %d", session_id, since)
        return relay

    async def _take_over(self, session_id: str) -> tuple[SessionRuntime, list[Inbound]] | None:
        """A relayed session looks free: own it and restore it here, or ``None``."""
        async with self._locks.hold(session_id):
            if session_id in self._live:
                return None
            if await self._placement.try_own(session_id, 0) is not None:
                return None
            lease = self._placement.lease(session_id)
            unhandled = [] if lease is None else await self._cluster.pending_input(lease)
            return await self._restore_owned(session_id), unhandled

    async def _running(self, session_id: str) -> SessionRuntime | None:
        """The live runtime of ``session_id``; one that is stopping is waited for."""
        runtime = self._live.get(session_id)
        if runtime is not None and runtime.stopping:
            await runtime.stopped()
            return None
        return runtime

    async def _check(self, session_id: str, token: str, principal: str | None) -> StoredSession:
        stored = await self._store.get(session_id)
        if stored is None or (principal is not None and stored.meta.principal != principal):
            raise ResumeRefused(CloseCode.UNKNOWN_SESSION, "unknown session")
        if not token_matches(token, stored.meta.token_hash):
            raise ResumeRefused(CloseCode.BAD_RESUME_TOKEN, "wrong resume token")
        return stored

    async def _restore_owned(self, session_id: str) -> SessionRuntime:
        """Restore a session whose lease this instance just took: from the store as
        the previous owner left it."""
        stored = await self._store.get(session_id)
        if stored is None:
            raise ResumeRefused(CloseCode.UNKNOWN_SESSION, "unknown session")
        return await self._restore_stored(stored, owned=True)

    async def _restore_stored(
        self, stored: StoredSession, *, owned: bool = False
    ) -> SessionRuntime:
        session_id = stored.meta.session_id
        if not owned:
            await self._placement.own(session_id)
            if self._cluster.distributed:
                return await self._restore_owned(session_id)
        try:
            state = decode_state(stored.state)
        except StateError as exc:
            log.error("cannot restore session=%s: %s", session_id, exc)
            raise ResumeRefused(CloseCode.INTERNAL_ERROR, "the session cannot be restored") from exc
        if state.ended:
            raise ResumeRefused(CloseCode.SESSION_ENDED, "the session has ended")
        # Touch it, then check it is still there: an expiry that ran before the touch
        # deleted it (refused below); one after it sees it fresh and keeps it.
        await self._placement.writer(session_id).commit(session_id, updated_at=self._clock())
        if await self._store.get(session_id) is None:
            raise ResumeRefused(CloseCode.UNKNOWN_SESSION, "unknown session")
        first = await self._store.first_seq(session_id)
        events = await self._store.read_events(session_id, 0 if first is None else first - 1)
        replay = ReplayLog(self._config.replay_capacity, events)
        open_turn = state.open_turn
        chunks: tuple[str, ...] = ()
        if open_turn is not None:
            chunks = tuple(
                _tts_text(e.data)
                for e in events
                if e.type == "response.tts" and e.turn_id == open_turn.turn_id
            )
        session = Session.restore(
            session_id,
            self._config.session,
            state,
            last_seq=replay.last_seq,
            open_turn_chunks=chunks,
            now=self._clock(),
        )
        runtime = self._run(session, stored.meta.token_hash, replay, stored.meta.principal)
        runtime.kick()
        if open_turn is not None:
            log.warning("session=%s turn=%s was cut by a restart", session_id, open_turn.turn_id)
        return runtime

    def _run(
        self, session: Session, token_hash: str, replay: ReplayLog, principal: str | None
    ) -> SessionRuntime:
        runtime = SessionRuntime(
            session,
            token_hash=token_hash,
            principal=principal,
            provider=self._provider,
            store=self._placement.writer(session.id),
            clock=self._clock,
            replay=replay,
            grace_s=self._config.grace_s,
            on_stopped=self._stopped,
            policy=self._config.provider,
            store_policy=self._config.store,
            rng=self._random,
            tools=self._config.tools,
        )
        self._live[session.id] = runtime
        return runtime

    def _stopped(self, runtime: SessionRuntime) -> None:
        if self._live.get(runtime.session.id) is runtime:
            del self._live[runtime.session.id]
            self._placement.release(runtime.session.id)

    async def delete(self, session_id: str, *, principal: str | None = None) -> bool:
        """End a session (its client gets ``session.ended``) and remove it from the
        store; ``False`` if unknown (or another principal's)."""
        async with self._locks.hold(session_id):
            if principal is not None:
                stored = await self._store.get(session_id)
                if stored is None or stored.meta.principal != principal:
                    return False
            runtime = self._live.get(session_id)
            if runtime is not None:
                runtime.terminate("the session was deleted")
                await runtime.stopped()
            elif self._cluster.distributed:
                await self._placement.tell_deleted(session_id)
            return await self._store.delete(session_id)

    async def sweep(self, ttl_s: float) -> list[str]:
        """Expire stored sessions idle for longer than ``ttl_s``; live ones are kept
        (and one the store expired anyway is ended, so nothing runs without rows)."""
        now = self._clock()
        for session_id, runtime in list(self._live.items()):
            if not runtime.stopping:
                try:
                    await self._placement.writer(session_id).commit(session_id, updated_at=now)
                except Fenced:
                    continue  # another instance took it over: its runtime finds out
        expired = await self._store.expire(now - ttl_s)
        for session_id in expired:
            async with self._locks.hold(session_id):
                gone = self._live.get(session_id)
                if gone is not None:
                    gone.terminate("the session expired")
                    await gone.stopped()
        if expired:
            log.info("expired %d idle session(s)", len(expired))
        if self._cluster.distributed:
            await self.recover()  # turns whose owner died with no client to resume them
        return expired

    async def recover(self) -> int:
        """End the turns a crash left ``streaming`` in the store (``failed``, with a
        reason), so the HTTP API shows them for what they are; returns how many
        sessions were recovered. On a shared store, only sessions whose owner is
        dead are listed, and each is taken over with its lease first."""
        recovered = 0
        for session_id in await self._store.streaming_sessions():
            async with self._locks.hold(session_id):
                if session_id in self._live:
                    continue
                stored = await self._store.get(session_id)
                if stored is None:
                    continue
                try:
                    runtime = await self._restore_stored(stored)
                except ResumeRefused as refused:
                    log.warning("cannot recover session=%s: %s", session_id, refused.reason)
                    continue
                except Held:
                    continue  # a live instance took it meanwhile
                runtime.stop("recovered after a restart")
                await runtime.stopped()
                recovered += 1
        if recovered:
            log.warning("recovered %d session(s) whose turn a restart cut", recovered)
        return recovered

    async def drain(self, timeout_s: float, *, reconnect_ms: int) -> None:
        """Graceful shutdown of every live session, all at once, within ``timeout_s``."""
        runtimes = [r for r in self._live.values() if not r.stopping]
        if not runtimes:
            return
        log.info("draining %d session(s) for up to %.0f s", len(runtimes), timeout_s)
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with asyncio.TaskGroup() as group:
            for runtime in runtimes:
                group.create_task(runtime.drain(deadline, reconnect_ms=reconnect_ms))

    async def shutdown(self) -> None:
        """Stop every live session (streaming turns end ``interrupted``) and flush."""
        runtimes = list(self._live.values())
        for runtime in runtimes:
            runtime.stop("the gateway is shutting down")
        for runtime in runtimes:
            await runtime.stopped()
        for relay in self._relays:
            await relay.aclose()
        await self._placement.aclose()

    async def serve_signals(self) -> None:
        """Act on what other instances tell this one (takeover, delete); runs until
        cancelled."""
        async for signal in self._cluster.signals():
            try:
                await self._placement.on_signal(signal)
            except StoreError as exc:
                raise_if_cancelled()
                log.warning("signal %s session=%s failed: %s", signal.kind, signal.session_id, exc)


class _KeyedLocks:
    """One lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def keyed_session_id(kind: str, key: str) -> str:
    """The session id of a platform's call ``key`` (stable across processes)."""
    digest = hashlib.sha256(f"{kind}\0{key}".encode()).hexdigest()[:24]
    return f"{kind}_{digest}"


def _tts_text(data: str) -> str:
    text = orjson.loads(data).get("text")
    return text if isinstance(text, str) else ""
