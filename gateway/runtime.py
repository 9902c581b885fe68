"""The asyncio shell around one :class:`~gateway.core.session.Session`.

It feeds the core what arrives (client events, provider deltas, the clock) and
carries out the effects it returns:

- provider streams run as tasks in the application's task group; a cancelled
  turn has its stream closed;
- every session event is logged for replay, **stored, then delivered**: one
  flusher task per session commits what accumulated (events, turn records, the
  state snapshot) in one store transaction, then hands the events to the attached
  client in order. A client never sees an event the store does not have, so after
  a crash it can resume without a gap or a repeat;
- attaching a client is a marker in that same pipeline, so ``session.ready`` and
  the replay of what the client missed land exactly between the last event
  delivered and the next live one.

The runtime outlives its connections: when the client goes away, the streaming
turn goes on for a grace period so that a resuming client still gets it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from gateway.core import wire
from gateway.core.codes import CloseCode, ErrorCode
from gateway.core.effects import (
    CancelGeneration,
    Close,
    SaveState,
    SaveTurn,
    Send,
    StartGeneration,
)
from gateway.core.events import (
    CONNECTION_EVENTS,
    ClientEvent,
    ResponseEnd,
    ServerEvent,
    SessionReconnect,
)
from gateway.core.history import Finish, GenerationRequest, StreamItem, Usage
from gateway.core.records import TurnRecord
from gateway.core.replay import LoggedEvent, ReplayLog
from gateway.core.session import Session
from gateway.core.state import encode_state
from gateway.providers.base import LLMProvider, ProviderError
from gateway.stores.base import SessionStore, StoreError

log = logging.getLogger("gateway.turn")


class ClientSink(Protocol):
    """Where a runtime sends its events: the connection attached to it."""

    @property
    def closed(self) -> bool:
        """The connection is gone or going: send nothing more."""
        ...

    def deliver(self, frame: LoggedEvent, event: ServerEvent | None = None) -> None:
        """Queue one event: ``frame`` is its native JSON with its ``seq``, ``event``
        the object when there is one (a replayed event after a restart has none).
        Must not block."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Close once everything queued so far was sent."""
        ...

    def abort(self, code: int, reason: str) -> None:
        """Close now, dropping whatever is still queued."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderPolicy:
    """Timeouts and retries around a provider stream.

    A failure the provider calls retryable (429, 5xx, timeouts, a cut connection)
    is retried with jittered exponential back-off, but only while no chunk of the
    turn was sent, so the user never hears a sentence twice.
    """

    first_token_timeout_s: float = 20.0
    token_timeout_s: float = 15.0
    retries: int = 2
    backoff_s: float = 0.5
    backoff_max_s: float = 4.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter back-off before retry ``attempt`` (1-based)."""
        return rng.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))


@dataclass(frozen=True, slots=True)
class _Attach:
    client: ClientSink
    resume_token: str
    last_seq: int | None


@dataclass(frozen=True, slots=True)
class _Notice:
    """A connection event for whoever is attached when the pipeline gets here."""

    delay_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Direct:
    """A connection event from the core (``pong``): not logged, and stamped on
    delivery with the newest seq the client has."""

    event: ServerEvent


@dataclass(frozen=True, slots=True)
class _Out:
    logged: LoggedEvent
    event: ServerEvent


_Item = _Out | _Direct | _Attach | _Notice | Close


def _frame(event: ServerEvent) -> LoggedEvent:
    return LoggedEvent(event.seq, event.type, None, wire.encode(event))


async def _aclose(stream: AsyncIterator[StreamItem]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


class SessionRuntime:
    """Runs one session: its provider tasks, its store pipeline, its client."""

    def __init__(
        self,
        session: Session,
        *,
        token_hash: str,
        principal: str | None = None,
        provider: LLMProvider,
        store: SessionStore,
        tasks: asyncio.TaskGroup,
        clock: Callable[[], float],
        replay: ReplayLog,
        grace_s: float,
        on_stopped: Callable[[SessionRuntime], None],
        policy: ProviderPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.session = session
        self.token_hash = token_hash
        self.principal = principal
        self.replay = replay
        self._provider = provider
        self._store = store
        self._tasks = tasks
        self._clock = clock
        self._grace_s = grace_s
        self._on_stopped = on_stopped
        self._policy = policy or ProviderPolicy()
        self._random = rng or random.Random()
        self._generations: dict[str, asyncio.Task[None]] = {}
        self._pending: list[_Item] = []
        self._pending_turns: dict[str, TurnRecord] = {}
        self._unstored: list[LoggedEvent] = []
        self._state_dirty = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._delivered_seq = replay.last_seq or session.seq
        self._client: ClientSink | None = None
        self._grace: asyncio.TimerHandle | None = None
        self.stopping = False
        self._flusher = tasks.create_task(self._flush_loop(), name=f"flush:{session.id}")

    # --- clients -----------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """A client is attached (or about to be)."""
        return self._client is not None or any(isinstance(i, _Attach) for i in self._pending)

    def attach(self, client: ClientSink, *, resume_token: str, last_seq: int | None) -> None:
        """Send this session to ``client`` from now on, after ``session.ready``.

        ``last_seq`` is the newest ``seq`` the client has (resume), or ``None`` for
        a client that starts fresh. A client already attached is cut off: it gets
        nothing more.
        """
        self._cancel_grace()
        old, self._client = self._client, None
        if old is not None and old is not client:
            old.abort(CloseCode.TAKEN_OVER, "another connection resumed this session")
        self._pending.append(_Attach(client, resume_token, last_seq))
        self._wake.set()

    def detach(self, client: ClientSink) -> None:
        """``client`` is gone; keep the session for the grace period."""
        if self._client is client:
            self._client = None
        if not self.attached and not self.stopping:
            self._start_grace()

    # --- inputs ------------------------------------------------------------------

    def receive(self, event: ClientEvent) -> None:
        """Feed one client event to the core."""
        self.session.receive(event, self._clock())
        self._apply()

    def reject(self, code: ErrorCode, message: str) -> None:
        """Answer a frame that could not be decoded."""
        self.session.reject(code, message, now=self._clock())
        self._apply()

    def close_client(self, code: int, reason: str) -> None:
        """Close the attached client once everything before this is delivered."""
        self._pending.append(Close(code, reason))
        self._wake.set()

    def kick(self) -> None:
        """Carry out effects the core produced outside an input (e.g. on restore)."""
        self._apply()

    def terminate(self, reason: str) -> None:
        """End the session for good (deleted): the client gets ``session.ended``."""
        self.session.end(reason, self._clock())
        self._apply()
        self.stop()

    def stop(self, reason: str = "the session was stopped") -> None:
        """End the streaming turn (``interrupted``, with ``reason``), flush, and go.

        A stopped runtime never leaves a turn open in the store.
        """
        self.session.abandon(reason, self._clock())
        self._apply()
        self._cancel_grace()
        for task in self._generations.values():
            task.cancel()
        self.stopping = True
        self._wake.set()

    async def drain(self, deadline: float, *, reconnect_ms: int) -> None:
        """Shut down gracefully: tell the client to reconnect, let the streaming
        turn finish until the loop time ``deadline``, then close (1012) and stop."""
        reason = "the gateway is shutting down"
        self._pending.append(_Notice(reconnect_ms, reason))
        self._wake.set()
        try:
            async with asyncio.timeout_at(deadline):
                await self._idle.wait()
        except TimeoutError:
            log.warning("drain deadline reached session=%s: ending its turn", self.session.id)
        self.session.abandon(reason, self._clock())
        self._apply()
        self._pending.append(Close(CloseCode.SERVICE_RESTART, reason))
        self.stop()
        await self.stopped()

    async def stopped(self) -> None:
        """Wait until the flusher has written everything and ended."""
        await asyncio.wait({self._flusher})

    # --- effects -----------------------------------------------------------------

    def _apply(self) -> None:
        for effect in self.session.effects():
            match effect:
                case Send(event=event):
                    if event.type in CONNECTION_EVENTS:
                        self._pending.append(_Direct(event))
                        continue
                    logged = LoggedEvent(
                        event.seq, event.type, getattr(event, "turn_id", None), wire.encode(event)
                    )
                    self.replay.append(logged)
                    self._pending.append(_Out(logged, event))
                    if isinstance(event, ResponseEnd):
                        self._log_turn(event)
                case SaveTurn(record=record):
                    self._pending_turns[record.turn_id] = record
                case SaveState():
                    self._state_dirty = True
                case StartGeneration(request=request):
                    self._generations[request.turn_id] = self._tasks.create_task(
                        self._generate(request),
                        name=f"generate:{self.session.id}:{request.turn_id}",
                    )
                case CancelGeneration(turn_id=turn_id):
                    task = self._generations.pop(turn_id, None)
                    if task is not None:
                        task.cancel()
                case Close():
                    self._pending.append(effect)
        if self._pending or self._state_dirty or self._pending_turns:
            self._wake.set()
        if self.session.streaming_turn_id is None:
            self._idle.set()
        else:
            self._idle.clear()

    # --- the store pipeline ------------------------------------------------------

    async def _flush_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending or self._pending_turns or self._state_dirty:
                    if not await self._flush_once():
                        break  # the store failed: retry on the next wake, not in a loop
                if self.stopping:
                    return
        except Exception:  # task boundary: never take the application's task group down
            log.exception("session pipeline crashed session=%s", self.session.id)
            if self._client is not None:
                self._client.abort(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._on_stopped(self)

    async def _flush_once(self) -> bool:
        # Take the batch and the snapshot in one step, so the stored state always
        # matches the stored events.
        batch, self._pending = self._pending, []
        turns, self._pending_turns = list(self._pending_turns.values()), {}
        state = encode_state(self.session.state()) if self._state_dirty else None
        self._state_dirty = False
        events = self._unstored + [item.logged for item in batch if isinstance(item, _Out)]
        stored = True
        if events or turns or state is not None:
            try:
                await self._store.commit(
                    self.session.id,
                    events=events,
                    turns=turns,
                    state=state,
                    updated_at=self._clock(),
                )
                self._unstored = []
            except StoreError:
                # Deliver anyway (the conversation goes on) and retry these writes
                # with the next batch, so the stored log never gets a gap.
                log.exception(
                    "store commit failed session=%s: %d event(s) not yet durable, will retry",
                    self.session.id,
                    len(events),
                )
                self._unstored = events
                for turn in turns:
                    self._pending_turns.setdefault(turn.turn_id, turn)
                self._state_dirty = self._state_dirty or state is not None
                stored = False
            if stored and any(e.type == "response.end" for e in events):
                await self._trim()
        for item in batch:
            match item:
                case _Out(logged=logged, event=event):
                    self._delivered_seq = logged.seq
                    if self._client is not None:
                        self._client.deliver(logged, event)
                case _Attach():
                    self._attach_now(item)
                case _Direct(event=event):
                    if self._client is not None:
                        stamped = replace(event, seq=self._delivered_seq)
                        self._client.deliver(_frame(stamped), stamped)
                case _Notice(delay_ms=delay_ms, reason=reason):
                    if self._client is not None:
                        notice = SessionReconnect(
                            session_id=self.session.id,
                            seq=self._delivered_seq,
                            delay_ms=delay_ms,
                            reason=reason,
                        )
                        self._client.deliver(_frame(notice), notice)
                case Close(code=code, reason=reason):
                    if self._client is not None:
                        self._client.close(code, reason)
        return stored

    async def _trim(self) -> None:
        """Keep the stored log as long as the replay log (once per turn)."""
        try:
            await self._store.trim_events(self.session.id, self.replay.capacity)
        except StoreError:
            log.exception("store trim failed session=%s", self.session.id)

    def _attach_now(self, attach: _Attach) -> None:
        client = attach.client
        if client.closed:
            if not self.attached:
                self._start_grace()
            return
        previous = self._client
        if previous is not None and previous is not client:
            # Two attaches landed in one batch: the earlier one loses, as in attach().
            previous.abort(CloseCode.TAKEN_OVER, "another connection resumed this session")
        session = self.session
        delivered = self._delivered_seq
        last_seq = attach.last_seq
        ready = session.ready_event(
            attach.resume_token,
            resumed=last_seq is not None,
            seq=delivered if last_seq is None else min(last_seq, delivered),
        )
        client.deliver(_frame(ready), ready)
        if last_seq is not None:
            replay = self.replay.since(last_seq, upto=delivered) if last_seq <= delivered else None
            if replay is None:
                resync = session.resync_event(delivered)
                client.deliver(_frame(resync), resync)
            else:
                for logged in replay:
                    client.deliver(logged)
        self._client = client

    # --- grace -------------------------------------------------------------------

    def _start_grace(self) -> None:
        if self._grace is None:
            loop = asyncio.get_running_loop()
            self._grace = loop.call_later(self._grace_s, self._grace_expired)

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _grace_expired(self) -> None:
        self._grace = None
        if not self.attached:
            self.stop(f"the client did not come back within {self._grace_s:g} s")

    # --- generation --------------------------------------------------------------

    async def _generate(self, request: GenerationRequest) -> None:
        turn_id = request.turn_id
        policy = self._policy
        attempt = 0
        while True:
            try:
                finish = await self._stream_turn(request)
            except ProviderError as exc:
                if (
                    exc.retryable
                    and attempt < policy.retries
                    and self.session.restart_turn(turn_id)
                ):
                    attempt += 1
                    delay = policy.backoff(attempt, self._random)
                    log.warning(
                        "provider failed session=%s turn=%s code=%s: retry %d/%d in %.2fs",
                        self.session.id,
                        turn_id,
                        exc.code,
                        attempt,
                        policy.retries,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                log.warning(
                    "provider failed session=%s turn=%s code=%s status=%s retryable=%s",
                    self.session.id,
                    turn_id,
                    exc.code,
                    exc.status,
                    exc.retryable,
                )
                self.session.provider_failed(
                    turn_id,
                    self._clock(),
                    message=exc.message,
                    retryable=exc.retryable,
                    detail=exc.code,
                )
            except Exception:  # task boundary: log it, fail the turn, keep the session
                log.exception("generation crashed session=%s turn=%s", self.session.id, turn_id)
                self.session.provider_failed(
                    turn_id,
                    self._clock(),
                    message="the gateway failed while generating this turn",
                    retryable=False,
                    code=ErrorCode.INTERNAL_ERROR,
                    detail="internal_error",
                )
            else:
                self.session.provider_done(turn_id, self._clock(), finish)
            break
        if self._generations.get(turn_id) is asyncio.current_task():
            del self._generations[turn_id]
        self._apply()

    async def _stream_turn(self, request: GenerationRequest) -> Finish | None:
        """Feed one provider stream to the core, with first-token and between-token
        timeouts, and return how it finished; the stream is closed however this ends."""
        turn_id = request.turn_id
        policy = self._policy
        stream = self._provider.stream(request)
        iterator = aiter(stream)
        limit = policy.first_token_timeout_s
        finish: Finish | None = None
        try:
            while True:
                try:
                    async with asyncio.timeout(limit):
                        item = await anext(iterator)
                except StopAsyncIteration:
                    return finish
                except TimeoutError as exc:
                    what = "first text" if limit == policy.first_token_timeout_s else "next text"
                    raise ProviderError(
                        f"the model sent no {what} within {limit:g} s",
                        code="timeout",
                        retryable=True,
                    ) from exc
                if isinstance(item, Usage):
                    self.session.provider_usage(turn_id, item)
                    continue
                if isinstance(item, Finish):
                    finish = item
                    continue
                limit = policy.token_timeout_s
                self.session.provider_delta(turn_id, item, self._clock())
                self._apply()
        finally:
            await _aclose(stream)

    def _log_turn(self, end: ResponseEnd) -> None:
        latency = end.latency
        log.info(
            "turn end session=%s turn=%s status=%s first_token_ms=%s first_chunk_ms=%s total_ms=%s",
            self.session.id,
            end.turn_id,
            end.status,
            latency.first_token_ms,
            latency.first_chunk_ms,
            latency.total_ms,
        )
