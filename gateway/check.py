"""``voice-gateway check``: one small request that proves the key and the model work.

The same check runs at start-up when ``GATEWAY_CHECK_PROVIDER`` is true, so a
gateway with a wrong key or model fails to start instead of failing every turn.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from gateway.core.history import (
    Finish,
    GenerationRequest,
    GenerationSettings,
    Message,
    Usage,
)
from gateway.providers.base import LLMProvider, ProviderError

#: What the check asks; a few output tokens are enough to prove the model answers.
CHECK_PROMPT = "Reply with the single word: OK"
CHECK_MAX_OUTPUT_TOKENS = 16


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A check that got an answer: how long it took and what came back."""

    provider: str
    model: str
    elapsed_ms: int
    text: str
    finish: Finish | None
    usage: Usage | None

    def describe(self) -> str:
        """One line for a person."""
        tokens = f", {self.usage.total_tokens} tokens" if self.usage is not None else ""
        ending = f", finish {self.finish.reason}" if self.finish is not None else ""
        return (
            f"OK: {self.provider} model {self.model} answered in {self.elapsed_ms} ms"
            f"{tokens}{ending}"
        )


class CheckFailed(Exception):
    """The provider refused or failed the check; the message says what to fix."""


async def check_provider(provider: LLMProvider, *, timeout_s: float = 30.0) -> CheckResult:
    """Send one small request through ``provider``; raise :class:`CheckFailed` if it fails.

    Any answer counts, even an empty or cut one: it proves that the key is
    accepted and the model exists.
    """
    request = GenerationRequest(
        session_id="check",
        turn_id="check",
        system_instruction=None,
        messages=(Message("user", CHECK_PROMPT),),
        settings=GenerationSettings(max_output_tokens=CHECK_MAX_OUTPUT_TOKENS),
    )
    started = time.perf_counter()
    parts: list[str] = []
    usage: Usage | None = None
    finish: Finish | None = None
    try:
        async with asyncio.timeout(timeout_s):
            async for item in provider.stream(request):
                if isinstance(item, Usage):
                    usage = item
                elif isinstance(item, Finish):
                    finish = item
                elif isinstance(item, str):
                    parts.append(item)
    except ProviderError as exc:
        raise CheckFailed(
            f"{provider.name} model {provider.model}: {exc.message} ({exc.code})"
        ) from exc
    except TimeoutError as exc:
        raise CheckFailed(
            f"{provider.name} model {provider.model}: no answer within {timeout_s:g} s"
        ) from exc
    return CheckResult(
        provider=provider.name,
        model=provider.model,
        elapsed_ms=round((time.perf_counter() - started) * 1000),
        text="".join(parts),
        finish=finish,
        usage=usage,
    )
