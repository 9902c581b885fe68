"""The asyncio shell around one :class:`~gateway.core.session.Session`.

It feeds the core what arrives (client events, provider deltas, the clock) and
carries out the effects it returns: events go to the attached client, provider
streams run as tasks in the application's task group, cancelled turns have their
streams closed. The runtime outlives any one connection, so that a later change
can let a client resume it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from gateway.core.codes import ErrorCode
from gateway.core.effects import CancelGeneration, Close, Send, StartGeneration
from gateway.core.events import ClientEvent, ResponseEnd, ServerEvent
from gateway.core.history import GenerationRequest
from gateway.core.session import Session
from gateway.providers.base import LLMProvider, ProviderError

log = logging.getLogger("gateway.turn")


class ClientSink(Protocol):
    """Where a runtime sends its events: the connection attached to it."""

    def deliver(self, event: ServerEvent) -> None:
        """Queue one event for sending; must not block."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Close once everything queued so far was sent."""
        ...


async def _aclose(stream: AsyncIterator[str]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


class SessionRuntime:
    """Runs one session: carries out its effects and owns its generation tasks."""

    def __init__(
        self,
        session: Session,
        provider: LLMProvider,
        tasks: asyncio.TaskGroup,
        clock: Callable[[], float],
    ) -> None:
        self.session = session
        self._provider = provider
        self._tasks = tasks
        self._clock = clock
        self._generations: dict[str, asyncio.Task[None]] = {}
        self._client: ClientSink | None = None

    @property
    def generating(self) -> int:
        """How many provider streams are running (0 or 1 in steady state)."""
        return len(self._generations)

    def attach(self, client: ClientSink) -> None:
        """Send this runtime's events to ``client`` from now on."""
        self._client = client

    def detach(self, client: ClientSink) -> None:
        """Stop sending to ``client`` (if it is still the attached one)."""
        if self._client is client:
            self._client = None

    def open(self) -> None:
        """Greet the attached client."""
        self.session.open()
        self._apply()

    def receive(self, event: ClientEvent) -> None:
        """Feed one client event to the core."""
        self.session.receive(event, self._clock())
        self._apply()

    def reject(self, code: ErrorCode, message: str) -> None:
        """Answer a frame that could not be decoded."""
        self.session.reject(code, message, now=self._clock())
        self._apply()

    def disconnected(self) -> None:
        """The client is gone for good: end the streaming turn, stop its provider stream."""
        self.session.disconnected(self._clock())
        self._apply()

    def cancel_all(self) -> None:
        """Cancel every provider stream (shutdown)."""
        for task in self._generations.values():
            task.cancel()

    def _apply(self) -> None:
        for effect in self.session.effects():
            match effect:
                case Send(event=event):
                    if isinstance(event, ResponseEnd):
                        self._log_turn(event)
                    if self._client is not None:
                        self._client.deliver(event)
                case StartGeneration(request=request):
                    self._generations[request.turn_id] = self._tasks.create_task(
                        self._generate(request),
                        name=f"generate:{self.session.id}:{request.turn_id}",
                    )
                case CancelGeneration(turn_id=turn_id):
                    task = self._generations.pop(turn_id, None)
                    if task is not None:
                        task.cancel()
                case Close(code=code, reason=reason):
                    if self._client is not None:
                        self._client.close(code, reason)

    async def _generate(self, request: GenerationRequest) -> None:
        turn_id = request.turn_id
        stream = self._provider.stream(request)
        try:
            async for delta in stream:
                self.session.provider_delta(turn_id, delta, self._clock())
                self._apply()
        except ProviderError as exc:
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
            self.session.provider_done(turn_id, self._clock())
        finally:
            if self._generations.get(turn_id) is asyncio.current_task():
                del self._generations[turn_id]
            await _aclose(stream)
        self._apply()

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
