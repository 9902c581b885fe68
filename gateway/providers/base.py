"""The provider interface and its error type.

A provider turns a :class:`~gateway.core.history.GenerationRequest` into an async
stream of :data:`~gateway.core.history.StreamItem`: text deltas (``str``), the
functions the model calls (:class:`~gateway.core.history.FunctionCall`, each
whole, with JSON-object arguments; a reply that calls functions finishes
``stop``), the provider's own token counts (:class:`~gateway.core.history.Usage`, the last one
counts) and at most one :class:`~gateway.core.history.Finish` saying how the reply
ended (a stream that ends without one ended normally). A reply the provider
withholds is a ``Finish("blocked")``, not an exception.

It translates its SDK's errors into :class:`ProviderError` (``raise ... from e``).
Retrying is not its business: its SDK never retries, and the gateway retries only
before the first chunk of a turn was sent. Cancelling the task that iterates
``stream()`` (or calling ``aclose()`` on the iterator) must close the underlying
network stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final, Protocol

from gateway.core.history import Finish, FinishReason, GenerationRequest, StreamItem, Usage
from gateway.errors import ProviderError

__all__ = [
    "SPEAK_NOW",
    "SPEAK_NOW_WITH_INSTRUCTIONS",
    "Finish",
    "FinishReason",
    "LLMProvider",
    "ProviderError",
    "StreamItem",
    "Usage",
    "build_system_instruction",
]

#: Sent as the last user content when the assistant speaks first or again
#: (``response.create``): most models must be asked by a user turn, and the turn's
#: instructions are already in the system instruction.
SPEAK_NOW_WITH_INSTRUCTIONS: Final = (
    "(No new user input. It is your turn to speak now: follow the instructions for this turn.)"
)
SPEAK_NOW: Final = "(No new user input. It is your turn to speak now.)"


def build_system_instruction(request: GenerationRequest) -> str | None:
    """The session's system instruction followed by the turn's instructions, if any."""
    sections: list[str] = []
    if request.system_instruction and request.system_instruction.strip():
        sections.append(request.system_instruction.strip())
    if request.instructions and request.instructions.strip():
        sections.append("Instructions for this turn:\n" + request.instructions.strip())
    return "\n\n".join(sections) or None


class LLMProvider(Protocol):
    """Something that streams an assistant reply."""

    @property
    def name(self) -> str:
        """Short provider name shown to clients (``gemini``, ``openai``, ``offline``)."""
        ...

    @property
    def model(self) -> str:
        """The model that serves replies."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        """Yield the reply as text deltas of any size, in order, with usage and finish."""
        ...

    async def aclose(self) -> None:
        """Release clients and connections; called once at shutdown."""
        ...
