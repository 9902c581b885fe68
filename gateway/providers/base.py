"""The provider interface and its error type.

A provider turns a :class:`~gateway.core.history.GenerationRequest` into an async
stream of text deltas. It translates its SDK's errors into :class:`ProviderError`
(``raise ... from e``). Retrying is not its business: it lives outside, and only
before the first chunk of a turn was sent. Cancelling the task that iterates
``stream()`` (or calling ``aclose()`` on the iterator) must close the underlying
network stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from gateway.core.history import GenerationRequest
from gateway.errors import ProviderError

__all__ = ["LLMProvider", "ProviderError"]


class LLMProvider(Protocol):
    """Something that streams an assistant reply."""

    @property
    def name(self) -> str:
        """Short provider name shown to clients (``gemini``, ``offline``)."""
        ...

    @property
    def model(self) -> str:
        """The model that serves replies."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Yield the reply as text deltas of any size, in order."""
        ...

    async def aclose(self) -> None:
        """Release clients and connections; called once at shutdown."""
        ...
