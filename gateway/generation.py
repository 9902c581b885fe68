"""Generating one turn: a provider stream fed to the session, with timeouts and retries.

A failure the provider calls retryable (429, 5xx, timeouts, a cut connection) is
retried with jittered exponential back-off, but only while no chunk of the turn
was sent, so the user never hears a sentence twice. Any other exception — a bug
in a provider, the chunker, the core — ends the turn ``failed`` with
``internal_error`` through :meth:`TurnSink.crashed`; it never leaves the task.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from gateway.core.history import Finish, FunctionCall, GenerationRequest, StreamItem, Usage
from gateway.errors import ProviderError
from gateway.providers.base import LLMProvider

log = logging.getLogger("gateway.turn")


@dataclass(frozen=True, slots=True)
class ProviderPolicy:
    """Timeouts and retries around a provider stream."""

    first_token_timeout_s: float = 20.0
    token_timeout_s: float = 15.0
    retries: int = 2
    backoff_s: float = 0.5
    backoff_max_s: float = 4.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter back-off before retry ``attempt`` (1-based)."""
        return rng.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))


class TurnSink(Protocol):
    """Where a generation reports (the session runtime)."""

    def delta(self, turn_id: str, text: str) -> None:
        """A piece of the reply."""
        ...

    def restart(self, turn_id: str) -> bool:
        """Forget the turn's text for a retry; ``False`` once a chunk was sent."""
        ...

    def call(self, turn_id: str, call: FunctionCall) -> None:
        """The model called a function."""
        ...

    def usage(self, turn_id: str, usage: Usage) -> None:
        """The provider's token counts so far (the last one counts)."""
        ...

    def done(self, turn_id: str, finish: Finish | None) -> None:
        """The reply is complete; ``finish`` says how, when the provider said."""
        ...

    def failed(self, turn_id: str, error: ProviderError) -> None:
        """The provider failed for good."""
        ...

    def crashed(self, turn_id: str, error: Exception) -> None:
        """Something other than the provider failed while generating."""
        ...

    async def room(self) -> None:
        """Wait until the session can take more (its store backlog is bounded)."""
        ...


async def generate(
    request: GenerationRequest,
    *,
    provider: LLMProvider,
    sink: TurnSink,
    policy: ProviderPolicy,
    rng: random.Random,
    session_id: str,
) -> None:
    """Run one turn to its end; returns normally whatever happens, unless cancelled."""
    turn_id = request.turn_id
    attempt = 0
    try:
        while True:
            try:
                finish = await _stream(request, provider=provider, sink=sink, policy=policy)
            except ProviderError as exc:
                if exc.retryable and attempt < policy.retries and sink.restart(turn_id):
                    attempt += 1
                    delay = policy.backoff(attempt, rng)
                    log.warning(
                        "provider failed session=%s turn=%s code=%s: retry %d/%d in %.2fs",
                        session_id,
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
                    session_id,
                    turn_id,
                    exc.code,
                    exc.status,
                    exc.retryable,
                )
                sink.failed(turn_id, exc)
            else:
                sink.done(turn_id, finish)
            return
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the turn was cancelled (interrupt, supersede, stop): nothing to report
        # A CancelledError nobody asked for (a provider that raised it): a fault like
        # any other, or the turn would stay open with nobody to end it.
        sink.crashed(turn_id, RuntimeError(f"the provider raised {exc!r}"))
    except Exception as exc:  # noqa: BLE001 -- the failure boundary of a turn: fail the turn, keep the session
        sink.crashed(turn_id, exc)


async def _stream(
    request: GenerationRequest, *, provider: LLMProvider, sink: TurnSink, policy: ProviderPolicy
) -> Finish | None:
    """Feed one provider stream to the sink, with first-token and between-token
    timeouts, and return how it finished; the stream is closed however this ends."""
    turn_id = request.turn_id
    stream = provider.stream(request)
    iterator = aiter(stream)
    limit = policy.first_token_timeout_s
    finish: Finish | None = None
    loop = asyncio.get_running_loop()
    try:
        # One timeout for the whole stream, moved before each wait and lifted after
        # it, rather than a new one (an object, a timer and a context) per piece.
        async with asyncio.timeout(None) as deadline:
            while True:
                deadline.reschedule(loop.time() + limit)
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    return finish
                deadline.reschedule(None)
                if isinstance(item, Usage):
                    sink.usage(turn_id, item)
                    continue
                if isinstance(item, Finish):
                    finish = item
                    continue
                limit = policy.token_timeout_s
                if isinstance(item, FunctionCall):
                    sink.call(turn_id, item)
                    await sink.room()
                    continue
                sink.delta(turn_id, item)
                await sink.room()
    except TimeoutError as exc:  # the wait's, or one the provider raised in it
        what = "first text" if limit == policy.first_token_timeout_s else "next text"
        raise ProviderError(
            f"the model sent no {what} within {limit:g} s", code="timeout", retryable=True
        ) from exc
    finally:
        await _aclose(stream)


async def _aclose(stream: AsyncIterator[StreamItem]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
