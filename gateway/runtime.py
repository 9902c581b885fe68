"""The asyncio shell around one :class:`~gateway.core.session.Session`.

It feeds the core what arrives (client events, provider deltas, the clock) and
carries out the effects it returns. Three pieces, each in its own module:

- :mod:`gateway.pipeline`: every session event is **stored, then delivered**;
  attaching a client is a marker in that same pipeline, so ``session.ready`` and
  the replay land exactly between the last event delivered and the next live one;
- :mod:`gateway.generation`: one task per turn streams the provider with
  timeouts and retries;
- here: the runtime's lifecycle (:class:`~gateway.lifecycle.RuntimeState`:
  attach, grace, stop, drain) and its **failure boundary**. The runtime's tasks
  belong to its own :class:`~gateway.tasks.TaskSet`; an unexpected exception
  ends the streaming turn ``failed`` (``internal_error``) and the session goes
  on; if the runtime cannot go on, its client is closed 1011 and the session
  stays resumable from the store. Nothing reaches another session.

The runtime outlives its connections: when the client goes away the streaming
turn goes on for a grace period, so that a resuming client still gets it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from gateway.core import wire
from gateway.core.codes import CloseCode, ErrorCode
from gateway.core.effects import (
    CancelGeneration,
    Close,
    RunTool,
    SaveState,
    SaveTurn,
    Send,
    StartGeneration,
    WakeAt,
)
from gateway.core.events import (
    CONNECTION_EVENTS,
    ClientEvent,
    ResponseEnd,
    ServerEvent,
    SessionReconnect,
)
from gateway.core.history import Finish, FunctionCall, Usage
from gateway.core.replay import LoggedEvent, ReplayLog
from gateway.core.session import Session
from gateway.core.state import StateEncoder
from gateway.errors import Fenced, ProviderError, RuntimeStopped
from gateway.flag import Flag
from gateway.generation import ProviderPolicy, generate
from gateway.lifecycle import RUNTIME_TRANSITIONS, Lifecycle, RuntimeState
from gateway.logformat import bind_session
from gateway.pipeline import Outgoing, Pipeline, StorePolicy, StoreUnavailable
from gateway.providers.base import LLMProvider
from gateway.stores.base import SessionStore
from gateway.tasks import TaskSet
from gateway.tools.webhook import ToolRunner, run_tool

__all__ = ["ClientSink", "ProviderPolicy", "SessionRuntime", "StorePolicy"]

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

    def replay(self, frames: Sequence[LoggedEvent]) -> None:
        """Queue a resume replay, sent in order before anything queued later; it
        does not count against the send queue's bound. Must not block."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Close once everything queued so far was sent."""
        ...

    def abort(self, code: int, reason: str) -> None:
        """Close now, dropping whatever is still queued."""
        ...


@dataclass(frozen=True, slots=True)
class _Attach:
    client: ClientSink
    resume_token: str
    last_seq: int | None


@dataclass(frozen=True, slots=True)
class _Notice:
    """A ``session.reconnect`` for whoever is attached when the pipeline gets here."""

    delay_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Direct:
    """A connection event from the core (``pong``): not logged, and stamped on
    delivery with the newest seq the client has."""

    event: ServerEvent


def _frame(event: ServerEvent) -> LoggedEvent:
    return LoggedEvent(event.seq, event.type, None, wire.encode(event))


class SessionRuntime:
    """Runs one session: its lifecycle, its provider tasks, its store pipeline, its client."""

    def __init__(
        self,
        session: Session,
        *,
        token_hash: str,
        principal: str | None = None,
        provider: LLMProvider,
        store: SessionStore,
        clock: Callable[[], float],
        replay: ReplayLog,
        grace_s: float,
        on_stopped: Callable[[SessionRuntime], None],
        policy: ProviderPolicy | None = None,
        store_policy: StorePolicy | None = None,
        rng: random.Random | None = None,
        tools: ToolRunner | None = None,
    ) -> None:
        self.session = session
        self._tools = tools
        self.token_hash = token_hash
        self.principal = principal
        self.replay = replay
        self._provider = provider
        self._clock = clock
        self._grace_s = grace_s
        self._on_stopped = on_stopped
        self._policy = policy or ProviderPolicy()
        self._random = rng or random.Random()
        self._life: Lifecycle[RuntimeState] = Lifecycle(
            f"runtime {session.id}", RuntimeState.DETACHED, RUNTIME_TRANSITIONS
        )
        self._tasks = TaskSet(f"session {session.id}", self._task_failed)
        encode = StateEncoder()
        self._pipeline = Pipeline(
            session.id,
            store,
            snapshot=lambda: encode(self.session.state()),
            dispatch=self._dispatch,
            wake=self._wake_pipeline,
            clock=clock,
            trim_to=replay.capacity,
            policy=store_policy,
            rng=self._random,
        )
        self._generations: dict[str, asyncio.Task[None]] = {}
        self._idle = Flag(True)
        self._done = Flag()
        self._delivered_seq = replay.last_seq or session.seq
        #: The attached client (``None`` while detached).
        self._client: ClientSink | None = None
        #: The attached client once its ``session.ready`` went out: live events go to it.
        self._greeted: ClientSink | None = None
        self._grace: asyncio.TimerHandle | None = None
        #: The task that runs the pipeline while it has work (``None`` while it has none).
        self._pipe: asyncio.Task[None] | None = None
        self._arm_grace()  # born detached: a runtime nobody attaches to stops by itself

    # --- state -------------------------------------------------------------------

    @property
    def state(self) -> RuntimeState:
        return self._life.state

    @property
    def stopping(self) -> bool:
        """Stopping or stopped: nothing can attach any more."""
        return self._life.state in (RuntimeState.STOPPING, RuntimeState.STOPPED)

    @property
    def attached(self) -> bool:
        """A client is attached (or about to be greeted)."""
        return self._life.state is RuntimeState.ATTACHED

    def _enter(self, new: RuntimeState) -> None:
        """The one place the runtime's state changes (and the grace timer with it)."""
        old = self._life.move(new)
        if old is RuntimeState.DETACHED and new is not RuntimeState.DETACHED:
            self._cancel_grace()
        if new is RuntimeState.DETACHED:
            self._arm_grace()

    # --- clients -----------------------------------------------------------------

    def attach(self, client: ClientSink, *, resume_token: str, last_seq: int | None) -> None:
        """Send this session to ``client`` from now on, after ``session.ready``.

        ``last_seq`` is the newest ``seq`` the client has (resume), or ``None`` for
        a client that starts fresh. A client already attached is cut off (4409).
        Raises :class:`~gateway.errors.RuntimeStopped` once the runtime is stopping:
        open the session afresh instead.
        """
        if self.stopping:
            raise RuntimeStopped(f"session {self.session.id} is stopping")
        old = self._client
        if old is not None and old is not client:
            old.abort(CloseCode.TAKEN_OVER, "another connection resumed this session")
        self._client, self._greeted = client, None
        self._enter(RuntimeState.ATTACHED)
        self._pipeline.push(_Attach(client, resume_token, last_seq))

    def detach(self, client: ClientSink) -> None:
        """``client`` is gone; keep the session for the grace period."""
        if client is not self._client:
            return  # an older, taken-over client: it no longer counts
        self._client = self._greeted = None
        if self._life.state is RuntimeState.ATTACHED:
            self._enter(RuntimeState.DETACHED)

    # --- inputs ------------------------------------------------------------------

    def receive(self, event: ClientEvent) -> None:
        """Feed one client event to the core."""
        if self.stopping:
            return
        try:
            self.session.receive(event, self._clock())
            self._apply()
        except Exception as exc:  # noqa: BLE001 -- failure boundary: this session only
            self._fault("a client event", exc)

    def reject(self, code: ErrorCode, message: str) -> None:
        """Answer a frame that could not be decoded."""
        if self.stopping:
            return
        try:
            self.session.reject(code, message, now=self._clock())
            self._apply()
        except Exception as exc:  # noqa: BLE001 -- failure boundary: this session only
            self._fault("an error reply", exc)

    def close_client(self, code: int, reason: str) -> None:
        """Close the attached client once everything before this is delivered."""
        self._pipeline.push(Close(code, reason))

    def kick(self) -> None:
        """Carry out effects the core produced outside an input (e.g. on restore)."""
        try:
            self._apply()
        except Exception as exc:  # noqa: BLE001 -- failure boundary: this session only
            self._fault("restoring", exc)

    def terminate(self, reason: str) -> None:
        """End the session for good (deleted): the client gets ``session.ended``."""
        if self.stopping:
            return
        try:
            self.session.end(reason, self._clock())
            self._apply()
        except Exception as exc:  # noqa: BLE001 -- failure boundary: this session only
            self._fault("ending the session", exc)
        self.stop(reason)

    def stop(
        self, reason: str = "the session was stopped", *, code: int = CloseCode.SERVICE_RESTART
    ) -> None:
        """End the streaming turn (``interrupted``, with ``reason``), flush, close the
        client with ``code``, and go. A stopped runtime never leaves a turn open."""
        if self.stopping:
            return
        try:
            self.session.abandon(reason, self._clock())
            self._apply()
        except Exception as exc:  # noqa: BLE001 -- failure boundary: this session only
            self._fault("stopping", exc)
            if self.stopping:
                return
        if self._client is not None:
            self._pipeline.push(Close(code, reason))
        self._enter(RuntimeState.STOPPING)
        self._client = None
        for task in self._generations.values():
            task.cancel()
        self._pipeline.finish()

    async def drain(self, deadline: float, *, reconnect_ms: int) -> None:
        """Shut down gracefully: tell the client to reconnect, let the streaming
        turn finish until the loop time ``deadline``, then close (1012) and stop."""
        if not self.stopping:
            reason = "the gateway is shutting down"
            self._pipeline.push(_Notice(reconnect_ms, reason))
            try:
                async with asyncio.timeout_at(deadline):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("drain deadline reached session=%s: ending its turn", self.session.id)
            self.stop(reason, code=CloseCode.SERVICE_RESTART)
        await self.stopped()

    async def stopped(self) -> None:
        """Wait until everything was written (or given up on) and every task ended."""
        await self._done.wait()
        await self._tasks.aclose()

    # --- effects -----------------------------------------------------------------

    def _apply(self) -> None:
        ended = False
        for effect in self.session.effects():
            match effect:
                case Send(event=event):
                    if event.type in CONNECTION_EVENTS:
                        if self._pipe is None and not self._pipeline.backlog:
                            # Nothing is being stored or waits: out now, not on a
                            # pipeline task a loop iteration later.
                            self._dispatch(_Direct(event))
                        else:
                            self._pipeline.push(_Direct(event))
                        continue
                    logged = LoggedEvent(
                        event.seq, event.type, getattr(event, "turn_id", None), wire.encode(event)
                    )
                    self.replay.append(logged)
                    self._pipeline.push(Outgoing(logged, event))
                    if isinstance(event, ResponseEnd):
                        self._log_turn(event)
                case SaveTurn(record=record):
                    self._pipeline.save_turn(record)
                case SaveState():
                    self._pipeline.mark_state()
                case StartGeneration(request=request):
                    if not self.stopping:
                        self._generations[request.turn_id] = self._tasks.spawn(
                            generate(
                                request,
                                provider=self._provider,
                                sink=self,
                                policy=self._policy,
                                rng=self._random,
                                session_id=self.session.id,
                            ),
                            name=f"generate:{self.session.id}:{request.turn_id}",
                        )
                case RunTool(call=call):
                    self._tasks.spawn(self._run_tool(call), name=f"tool:{self.session.id}")
                case WakeAt(at=at):
                    asyncio.get_running_loop().call_later(max(0.0, at - self._clock()), self._tick)
                case CancelGeneration(turn_id=turn_id):
                    task = self._generations.pop(turn_id, None)
                    if task is not None:
                        task.cancel()
                case Close():
                    self._pipeline.push(effect)
                    ended = self.session.closed
        if self.session.streaming_turn_id is None:
            self._idle.set()
        else:
            self._idle.clear()
        if ended and not self.stopping:
            # The session is over: nothing can attach to it any more.
            self._pipeline.mark_state()
            self._enter(RuntimeState.STOPPING)
            self._client = None
            self._pipeline.finish()

    # --- the pipeline ------------------------------------------------------------

    def _wake_pipeline(self) -> None:
        """The pipeline has work: run it on a task unless one is at it (or it is over)."""
        if self._pipe is None and self._life.state is not RuntimeState.STOPPED:
            self._pipe = self._tasks.spawn(self._run_pipeline(), name=f"pipeline:{self.session.id}")

    async def _run_pipeline(self) -> None:
        try:
            ended = await self._pipeline.run()
        except Fenced:
            log.warning("session=%s was taken over by another instance: stopping", self.session.id)
            self._give_up(CloseCode.TAKEN_OVER, "another connection resumed this session")
            return
        except StoreUnavailable as exc:
            log.error(
                "session=%s: %s; closing its client (1011): it can resume once the store is back",
                self.session.id,
                exc,
            )
            self._give_up(CloseCode.INTERNAL_ERROR, "session store unavailable; resume later")
            return
        self._pipe = None  # nothing is left: whatever comes next wakes a new task
        if ended:
            self._finish()

    def _dispatch(self, item: object) -> None:
        match item:
            case Outgoing(logged=logged, event=event):
                self._delivered_seq = logged.seq
                if self._greeted is not None:
                    self._greeted.deliver(logged, event)
            case _Attach():
                self._greet(item)
            case _Direct(event=event):
                if self._greeted is not None:
                    stamped = replace(event, seq=self._delivered_seq)
                    self._greeted.deliver(_frame(stamped), stamped)
            case _Notice(delay_ms=delay_ms, reason=reason):
                if self._greeted is not None:
                    notice = SessionReconnect(
                        session_id=self.session.id,
                        seq=self._delivered_seq,
                        delay_ms=delay_ms,
                        reason=reason,
                    )
                    self._greeted.deliver(_frame(notice), notice)
            case Close(code=code, reason=reason):
                if self._greeted is not None:
                    self._greeted.close(code, reason)
                    self._greeted = None

    def _greet(self, attach: _Attach) -> None:
        client = attach.client
        if client is not self._client or client.closed:
            return  # taken over or gone before its turn in the pipeline came
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
            missed = self.replay.since(last_seq, upto=delivered) if last_seq <= delivered else None
            if missed is None:
                resync = session.resync_event(delivered)
                client.deliver(_frame(resync), resync)
            elif missed:
                client.replay(missed)
        self._greeted = client

    # --- ends ----------------------------------------------------------------------

    def _finish(self) -> None:
        """The pipeline wrote everything: the runtime is stopped."""
        self._cancel_grace()
        if self._life.state is not RuntimeState.STOPPED:
            self._life.move(RuntimeState.STOPPED)
        for task in self._generations.values():
            task.cancel()
        self._generations.clear()
        self._done.set()
        self._on_stopped(self)

    def _give_up(self, code: int, reason: str) -> None:
        """The runtime cannot go on: close its client now and stop without writing
        more. The store keeps the last good commit, so the session resumes from it."""
        if self._life.state is RuntimeState.STOPPED:
            return
        client, self._client, self._greeted = self._client, None, None
        if client is not None:
            client.abort(code, reason)
        self._pipeline.discard()
        if not self.stopping:
            self._enter(RuntimeState.STOPPING)
        if self._pipe is not None and self._pipe is not asyncio.current_task():
            self._pipe.cancel()
        self._finish()

    def _fault(self, where: str, exc: BaseException) -> None:
        """An unexpected exception in this session: log it once, fail the streaming
        turn (``internal_error``) and go on; give up if even that fails."""
        log.error(
            "internal error in %s session=%s turn=%s",
            where,
            self.session.id,
            self.session.streaming_turn_id,
            exc_info=exc,
        )
        try:
            turn_id = self.session.streaming_turn_id
            if turn_id is not None:
                self._fail_turn(turn_id)
            self._apply()
        except Exception:  # the core cannot go on: this session stops, the process does not
            log.exception("session=%s cannot go on: closing its client (1011)", self.session.id)
            self._give_up(CloseCode.INTERNAL_ERROR, "internal error; resume to continue")

    def _fail_turn(self, turn_id: str) -> None:
        self.session.provider_failed(
            turn_id,
            self._clock(),
            message="the gateway failed while generating this turn",
            retryable=False,
            code=ErrorCode.INTERNAL_ERROR,
            detail="internal_error",
        )

    def _task_failed(self, task: asyncio.Task[Any], exc: BaseException) -> None:
        if task is self._pipe:
            log.error("session pipeline crashed session=%s", self.session.id, exc_info=exc)
            self._give_up(CloseCode.INTERNAL_ERROR, "internal error; resume to continue")
        else:
            self._fault(f"task {task.get_name()}", exc)

    # --- TurnSink: what a generation task reports ----------------------------------

    def delta(self, turn_id: str, text: str) -> None:
        self.session.provider_delta(turn_id, text, self._clock())
        self._apply()

    def restart(self, turn_id: str) -> bool:
        return self.session.restart_turn(turn_id)

    def call(self, turn_id: str, call: FunctionCall) -> None:
        self.session.provider_call(turn_id, call, self._clock())
        self._apply()

    async def _run_tool(self, call: FunctionCall) -> None:
        bind_session(self.session.id)  # the tool's log lines and trace name the session
        output = await run_tool(self._tools, call)
        self.session.tool_finished(call.call_id, output, self._clock())
        self._apply()

    def _tick(self) -> None:
        """A function call's deadline (``WakeAt``) is due."""
        if self.stopping:
            return
        try:
            self.session.tick(self._clock())
            self._apply()
        except Exception as exc:  # noqa: BLE001 -- failure boundary: this session only
            self._fault("a tool deadline", exc)

    def usage(self, turn_id: str, usage: Usage) -> None:
        self.session.provider_usage(turn_id, usage)

    def done(self, turn_id: str, finish: Finish | None) -> None:
        self._forget(turn_id)
        self.session.provider_done(turn_id, self._clock(), finish)
        self._apply()

    def failed(self, turn_id: str, error: ProviderError) -> None:
        self._forget(turn_id)
        self.session.provider_failed(
            turn_id,
            self._clock(),
            message=error.message,
            retryable=error.retryable,
            detail=error.code,
        )
        self._apply()

    def crashed(self, turn_id: str, error: Exception) -> None:
        self._forget(turn_id)
        log.error(
            "internal error while generating session=%s turn=%s",
            self.session.id,
            turn_id,
            exc_info=error,
        )
        try:
            self._fail_turn(turn_id)
            self._apply()
        except Exception:  # the core cannot go on: this session stops, the process does not
            log.exception("session=%s cannot go on: closing its client (1011)", self.session.id)
            self._give_up(CloseCode.INTERNAL_ERROR, "internal error; resume to continue")

    async def room(self) -> None:
        await self._pipeline.room()

    def _forget(self, turn_id: str) -> None:
        if self._generations.get(turn_id) is asyncio.current_task():
            del self._generations[turn_id]

    # --- grace -------------------------------------------------------------------

    def _arm_grace(self) -> None:
        self._cancel_grace()
        loop = asyncio.get_running_loop()
        self._grace = loop.call_later(self._grace_s, self._grace_expired)

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _grace_expired(self) -> None:
        self._grace = None
        if self._life.state is RuntimeState.DETACHED:
            self.stop(f"the client did not come back within {self._grace_s:g} s")

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
