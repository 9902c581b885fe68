"""Fault injection for the session shell: a provider that raises where it should
not, a store that fails and recovers on command, and a gateway fixture that runs
the real app under uvicorn with both.

``FaultyProvider`` wraps the offline provider (its stream passes through). What it
does for a turn is read off the newest user message:

- ``[raise-before]``: raise before the first token;
- ``[raise-mid]``: raise after some tokens (a sentence or two was spoken);
- ``[raise-end]``: raise after the whole reply was streamed, before the stream ends;
- ``[random]``: raise at a random point (a seeded RNG per session and turn picks the
  point and the exception);
- ``[raise-cancel]``: raise a stray ``asyncio.CancelledError`` after some tokens
  (a library bug; nobody cancelled the task);
- ``[hang]``: send nothing, ever (until cancelled);
- ``[deaf]``: send one sentence, then ignore cancellation (swallow every
  ``CancelledError``) until :attr:`FaultyProvider.released` is set;
- ``[long:N]``: reply with ``N`` numbered sentences, one delta each (big turns);

and with ``rate > 0``, any other turn raises at a random point with that
probability. The exceptions are plain ``RuntimeError``, ``KeyError`` and
``ValueError``, never a ``ProviderError``: bugs, not provider failures. Every
fault is recorded in :attr:`FaultyProvider.raised`.

``FlakyStore`` wraps a real store. ``failing = True`` makes ``commit`` (and the
methods named in ``fail_methods``) raise ``StoreError`` until ``failing = False``;
``commit_delay_s`` slows every commit down, ``delays`` any method before it
runs, ``stale_delays`` a read after it ran (its answer goes stale); calls are
counted. The test thread flips these attributes while the server's loop (another
thread) reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed

from gateway.app import create_app, uvicorn_options
from gateway.core.history import GenerationRequest
from gateway.core.records import TurnRecord
from gateway.errors import StoreError
from gateway.providers.offline import OfflineProvider, compose_reply
from gateway.settings import Settings
from gateway.stores.base import SessionMeta, SessionStore, StoredEvent, StoredSession
from gateway.stores.sqlite import SqliteStore
from tests.support.client import Client
from tests.support.servers import RunningServer, running

EXCEPTIONS: tuple[type[Exception], ...] = (RuntimeError, KeyError, ValueError)
_LONG = re.compile(r"\[long:(\d+)\]")


@dataclass(frozen=True, slots=True)
class Fault:
    """One exception the provider raised: where and what."""

    session_id: str
    turn_id: str
    where: str
    after_tokens: int
    exception: type[BaseException]


def last_user_text(request: GenerationRequest) -> str:
    if request.messages and request.messages[-1].role == "user":
        return request.messages[-1].text
    return ""


class FaultyProvider:
    """The offline provider, with exceptions where the user's text asks for them."""

    def __init__(
        self,
        inner: OfflineProvider | None = None,
        *,
        seed: int = 0,
        rate: float = 0.0,
        token_chars: int = 4,
        token_delay_s: float = 0.0,
    ) -> None:
        self._inner = inner or OfflineProvider(token_chars=token_chars, token_delay_s=token_delay_s)
        self._seed = seed
        self._rate = rate
        self._token_chars = token_chars
        self._token_delay_s = token_delay_s
        self._lock = threading.Lock()
        self.raised: list[Fault] = []
        self.streams = 0
        #: Tokens handed out so far, over every stream.
        self.tokens = 0
        #: Streams that were closed (``aclose``d or cancelled) before they ended.
        self.cut = 0
        #: Ends every ``[deaf]`` stream (set it before the server stops).
        self.released = threading.Event()
        #: ``[deaf]`` streams that started ignoring cancellation, and the
        #: cancellations they swallowed.
        self.deaf = 0
        self.swallowed = 0

    @property
    def name(self) -> str:
        return "offline"

    @property
    def model(self) -> str:
        return "offline-faulty"

    def _rng(self, request: GenerationRequest) -> random.Random:
        return random.Random(f"{self._seed}:{request.session_id}:{request.turn_id}")

    def _plan(self, request: GenerationRequest, n_tokens: int) -> tuple[str, int] | None:
        """``(where, after_tokens)`` of the fault for this turn, or ``None``."""
        text = last_user_text(request)
        rng = self._rng(request)
        if "[raise-before]" in text:
            return "before", 0
        if "[raise-mid]" in text:
            return "mid", max(1, n_tokens // 2)
        if "[raise-end]" in text:
            return "end", n_tokens
        if "[raise-cancel]" in text:
            return "cancel", max(1, n_tokens // 2)
        if "[random]" in text or (self._rate and rng.random() < self._rate):
            return "random", rng.randint(0, n_tokens)
        return None

    def _length(self, request: GenerationRequest) -> int:
        """How many text deltas the reply will have (for placing a fault)."""
        long = _LONG.search(last_user_text(request))
        if long is not None:
            return int(long.group(1))
        return -(-len(compose_reply(request)) // self._token_chars)

    async def _source(self, request: GenerationRequest) -> AsyncIterator[Any]:
        """The stream being wrapped: ``[long:N]`` sentences, else the offline provider's."""
        long = _LONG.search(last_user_text(request))
        if long is None:
            async with contextlib.aclosing(self._inner.stream(request)) as inner:
                async for item in inner:
                    yield item
            return
        for i in range(int(long.group(1))):
            await asyncio.sleep(self._token_delay_s)
            yield f"Sentence number {i} is here. "

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Any]:
        """The offline provider's stream (text deltas, and whatever else it yields,
        passed through), with the fault the user's text asks for."""
        with self._lock:
            self.streams += 1
        text = last_user_text(request)
        if "[hang]" in text:
            try:
                await asyncio.Event().wait()
            finally:
                with self._lock:
                    self.cut += 1
        if "[deaf]" in text:
            yield "I will not be interrupted. "
            self.deaf += 1
            while not self.released.is_set():
                try:
                    await asyncio.sleep(0.02)
                except asyncio.CancelledError:
                    self.swallowed += 1  # the bug being simulated: a cancel swallowed
            return
        plan = self._plan(request, self._length(request))
        rng = self._rng(request)
        texts = 0
        finished = False
        try:
            async with contextlib.aclosing(self._source(request)) as source:
                async for item in source:
                    if isinstance(item, str):
                        if plan is not None and texts == plan[1]:
                            self._raise(request, plan, rng)
                        texts += 1
                        self.tokens += 1
                    yield item
            if plan is not None:  # the fault's point is at (or past) the end
                self._raise(request, plan, rng)
            finished = True
        finally:
            if not finished:
                with self._lock:
                    self.cut += 1

    def _raise(self, request: GenerationRequest, plan: tuple[str, int], rng: random.Random) -> None:
        kind: type[BaseException] = rng.choice(EXCEPTIONS)
        if plan[0] == "cancel":
            kind = asyncio.CancelledError
        fault = Fault(request.session_id, request.turn_id, plan[0], plan[1], kind)
        with self._lock:
            self.raised.append(fault)
        raise kind(f"injected fault {plan[0]} after {plan[1]} tokens in {request.turn_id}")

    def faults_of(self, session_id: str) -> list[Fault]:
        with self._lock:
            return [f for f in self.raised if f.session_id == session_id]

    async def aclose(self) -> None:
        return None


class FlakyStore:
    """A real store whose writes fail (``StoreError``) while :attr:`failing` is set."""

    def __init__(
        self,
        inner: SessionStore,
        *,
        fail_methods: Sequence[str] = ("commit",),
        commit_delay_s: float = 0.0,
        delays: dict[str, float] | None = None,
        stale_delays: dict[str, float] | None = None,
    ) -> None:
        self.inner = inner
        self.failing = False
        self.fail_methods = frozenset(fail_methods)
        self.commit_delay_s = commit_delay_s
        #: Seconds every call of a method waits (after counting it) before it runs.
        self.delays = dict(delays or {})
        #: Seconds a read waits *after* the inner store answered: the caller gets
        #: an answer that may be stale by the time it has it.
        self.stale_delays = dict(stale_delays or {})
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        #: Commits running right now (inside the delay or the inner store).
        self.in_commit = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    async def _enter(self, method: str) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        self.calls[method] += 1
        if self.failing and method in self.fail_methods:
            self.failures[method] += 1
            raise StoreError(f"injected store failure in {method}")
        delay = self.delays.get(method, 0.0)
        if delay:
            await asyncio.sleep(delay)

    async def _stale(self, method: str) -> None:
        delay = self.stale_delays.get(method, 0.0)
        if delay:
            await asyncio.sleep(delay)

    # --- the test thread's view of the real store ----------------------------------

    def call_soon(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's loop from the test thread; its result."""
        assert self.loop is not None, "the store was never used"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def stored_seqs(self, session_id: str) -> set[int]:
        """The seqs the real store holds now (callable from the test's own loop)."""
        events = await asyncio.to_thread(self.call_soon, self.inner.read_events(session_id, 0))
        return {e.seq for e in events}

    # --- SessionStore ----------------------------------------------------------------

    async def create(self, meta: SessionMeta, state: bytes) -> None:
        await self._enter("create")
        await self.inner.create(meta, state)

    async def get(self, session_id: str) -> StoredSession | None:
        await self._enter("get")
        found = await self.inner.get(session_id)
        await self._stale("get")
        return found

    async def commit(
        self,
        session_id: str,
        *,
        events: Sequence[StoredEvent] = (),
        turns: Sequence[TurnRecord] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
    ) -> None:
        await self._enter("commit")
        self.in_commit += 1
        try:
            if self.commit_delay_s:
                await asyncio.sleep(self.commit_delay_s)
            if self.failing and "commit" in self.fail_methods:  # it broke while we waited
                self.failures["commit"] += 1
                raise StoreError("injected store failure in commit")
            await self.inner.commit(
                session_id, events=events, turns=turns, state=state, updated_at=updated_at
            )
        finally:
            self.in_commit -= 1

    async def read_events(
        self, session_id: str, after_seq: int, limit: int | None = None
    ) -> list[StoredEvent]:
        await self._enter("read_events")
        events = await self.inner.read_events(session_id, after_seq, limit)
        await self._stale("read_events")
        return events

    async def first_seq(self, session_id: str) -> int | None:
        await self._enter("first_seq")
        return await self.inner.first_seq(session_id)

    async def trim_events(self, session_id: str, keep_last: int) -> None:
        await self._enter("trim_events")
        await self.inner.trim_events(session_id, keep_last)

    async def list_turns(self, session_id: str) -> list[TurnRecord]:
        await self._enter("list_turns")
        return await self.inner.list_turns(session_id)

    async def list_sessions(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        principal: str | None = None,
    ) -> list[SessionMeta]:
        await self._enter("list_sessions")
        return await self.inner.list_sessions(limit=limit, before=before, principal=principal)

    async def delete(self, session_id: str) -> bool:
        await self._enter("delete")
        return await self.inner.delete(session_id)

    async def expire(self, idle_before: float) -> list[str]:
        await self._enter("expire")
        return await self.inner.expire(idle_before)

    async def streaming_sessions(self) -> list[str]:
        await self._enter("streaming_sessions")
        return await self.inner.streaming_sessions()

    async def ping(self) -> None:
        await self._enter("ping")
        await self.inner.ping()

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- a gateway with faults ----------------------------------------------------------


@dataclass
class FaultyGateway:
    """A running gateway, its app (``app.state.manager``), its provider and its store."""

    server: RunningServer
    app: Starlette
    settings: Settings
    provider: Any
    store: FlakyStore
    db_path: Path
    _stack: ExitStack = field(repr=False, default_factory=ExitStack)

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    @property
    def http_url(self) -> str:
        return self.server.http_url

    def live_runtime(self, session_id: str) -> Any:
        """The session's live runtime in the server (read from the test thread)."""
        return self.app.state.manager.live(session_id)

    def stop(self) -> None:
        """Stop the server (the store heals and deaf streams end first, so that
        shutdown can flush)."""
        self.store.failing = False
        self.store.commit_delay_s = 0.0
        released = getattr(self.provider, "released", None)
        if released is not None:
            released.set()
        self._stack.close()


FaultyFactory = Callable[..., FaultyGateway]


@contextmanager
def faulty_gateways(tmp_path: Path) -> Iterator[FaultyFactory]:
    """Start gateways with a :class:`FaultyProvider` (or ``provider=``) and a
    :class:`FlakyStore` around a real SQLite file; settings by environment name.
    Use it in a fixture: ``with faulty_gateways(tmp_path) as start: yield start``.

    ``store_options`` go to :class:`FlakyStore`; ``db`` names the SQLite file (the
    same name twice restarts a gateway on the same file, once the first stopped).
    Every gateway still running stops on exit.
    """
    gateways: list[FaultyGateway] = []

    def start(
        *,
        provider: Any = None,
        store_options: dict[str, Any] | None = None,
        db: str = "sessions.db",
        **env: Any,
    ) -> FaultyGateway:
        path = tmp_path / db
        env.setdefault("GATEWAY_STORE", f"sqlite:///{path}")
        settings = Settings(_env_file=None, **env)
        llm = provider if provider is not None else FaultyProvider()
        holder: list[FlakyStore] = []

        def wrap(opened: SessionStore) -> SessionStore:
            flaky = FlakyStore(opened, **(store_options or {}))
            holder.append(flaky)
            return flaky

        app = create_app(settings, provider=llm, store=wrap)
        stack = ExitStack()
        server = stack.enter_context(running(app, **uvicorn_options(settings)))
        gateway = FaultyGateway(server, app, settings, llm, holder[0], path, stack)
        gateways.append(gateway)
        return gateway

    try:
        yield start
    finally:
        for gateway in reversed(gateways):
            gateway.stop()


# --- what clients saw, and what the store holds -------------------------------------

#: Connection events: not counted, never replayed.
CONNECTION_TYPES = frozenset(
    {"session.ready", "session.resync", "session.reconnect", "heartbeat", "pong"}
)


def session_events(received: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session events (seq-counted) among what a client received."""
    return [e for e in received if e["type"] not in CONNECTION_TYPES]


def merge_views(*connections: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One client's view over several connections (what each received, in
    order), merged the way the protocol's client recipe says: an event whose
    ``seq`` is not newer than the newest processed is skipped. A skipped event
    must be the very event already held under that ``seq`` (no seq reused)."""
    merged: dict[int, dict[str, Any]] = {}
    newest = 0
    for received in connections:
        for event in session_events(received):
            seq = event["seq"]
            if seq <= newest:
                assert merged.get(seq, event) == event, f"seq {seq} came back as another event"
                continue
            merged[seq] = event
            newest = seq
    return list(merged.values())


def check_view(events: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Assert the protocol's promises about one session's events: ``seq`` 1..N
    each once and in order; every turn is ``response.start``, chunks, exactly one
    ``response.end``; nothing of a turn after its end; an ``error`` with the
    turn's id right before a ``failed`` end. Returns the events by turn."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), f"seqs are not 1..N: {seqs}"
    turns: dict[str, list[dict[str, Any]]] = {}
    ended: set[str] = set()
    for i, event in enumerate(events):
        turn_id = event.get("turn_id")
        if event["type"] == "response.start":
            assert turn_id not in turns, f"{turn_id} started twice"
            turns[turn_id] = [event]
            continue
        if event["type"] not in ("response.tts", "response.end"):
            continue
        assert turn_id in turns, f"{event['type']} of {turn_id} before its start"
        assert turn_id not in ended, (
            f"{event['type']} seq {event['seq']} of {turn_id} after its end"
        )
        turns[turn_id].append(event)
        if event["type"] == "response.tts":
            assert event["index"] == len(turns[turn_id]) - 2, f"chunk index gap in {turn_id}"
        else:
            ended.add(turn_id)
            if event["status"] == "failed" and "restarted" not in (event["reason"] or ""):
                before = events[i - 1]
                assert (before["type"], before.get("turn_id")) == ("error", turn_id), (
                    f"failed end of {turn_id} without its error right before: {before}"
                )
    assert ended == set(turns), f"turns without an end: {set(turns) - ended}"
    return turns


async def read_store(
    db_path: Path, session_id: str
) -> tuple[list[dict[str, Any]], list[TurnRecord]]:
    """The session's stored events (decoded) and turns, read straight from the
    SQLite file (open it only once its gateway stopped: one process, one writer)."""
    store = SqliteStore(db_path)
    await store.open()
    try:
        events = await store.read_events(session_id, 0)
        turns = await store.list_turns(session_id)
    finally:
        await store.aclose()
    return [orjson.loads(e.data) for e in events], turns


def resume_url(ws_url: str, ready: dict[str, Any], last_seq: int) -> str:
    return (
        f"{ws_url}/ws?session_id={ready['session_id']}"
        f"&resume_token={ready['resume_token']}&last_seq={last_seq}"
    )


class Reader:
    """Reads a :class:`~tests.support.client.Client` in the background into
    ``client.received`` until the server closes; :attr:`code` is its close code."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.code: int | None = None
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="test-reader")

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.client.received

    def seqs(self) -> set[int]:
        """The seqs of the session events received so far."""
        return {e["seq"] for e in session_events(self.client.received)}

    async def _run(self) -> None:
        ws = self.client.ws
        try:
            async for raw in ws:
                self.client.received.append(orjson.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            self.code = ws.close_code
            self.closed.set()

    async def wait_closed(self, within_s: float = 10.0) -> int | None:
        async with asyncio.timeout(within_s):
            await self.closed.wait()
        return self.code

    async def until(self, done: Callable[[dict[str, Any]], bool], within_s: float = 10.0) -> None:
        """Wait until an event for which ``done`` is true has arrived."""
        await wait_until(lambda: any(done(e) for e in self.client.received), within_s)

    async def stop(self) -> None:
        await self.client.ws.close()
        await self.wait_closed()


async def wait_until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    """Poll ``condition`` every 10 ms; ``AssertionError`` after ``within_s`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within_s:g} s")
        await asyncio.sleep(0.01)
