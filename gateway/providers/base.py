"""The provider interface and its error type.

A provider turns a :class:`~gateway.core.history.GenerationRequest` into an async
stream of :data:`~gateway.core.history.StreamItem`: text deltas (``str``), the
provider's own token counts (:class:`~gateway.core.history.Usage`, the last one
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
from typing import Protocol

from gateway.core.history import Finish, FinishReason, GenerationRequest, StreamItem, Usage
from gateway.errors import ProviderError

__all__ = [
    "Finish",
    "FinishReason",
    "LLMProvider",
    "ProviderError",
    "StreamItem",
    "Usage",
]


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
