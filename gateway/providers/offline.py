"""A provider that needs no key and no network.

It streams a deterministic reply of several sentences, a few characters at a time
at a realistic pace, and refers to the conversation so far, so that history is
visible. It answers in Spanish when the session language or the user's words are
Spanish, in English otherwise. It reports usage as a rough count (four characters
a token), so token accounting and budgets can be tried without a key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from gateway.core.history import Finish, GenerationRequest, StreamItem, Usage

if TYPE_CHECKING:
    from gateway.settings import Settings

_SPANISH_HINT = re.compile(
    r"[¿¡ñáéíóú]|\b(hola|gracias|qué|cómo|dónde|por favor|buenos|buenas|sí|estás|usted)\b",
    re.IGNORECASE,
)
_QUOTE_MAX = 80


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 1].rstrip() + "…"


def _is_spanish(request: GenerationRequest, last_user: str | None) -> bool:
    if request.language and request.language.lower().startswith("es"):
        return True
    return last_user is not None and _SPANISH_HINT.search(last_user) is not None


def compose_reply(request: GenerationRequest) -> str:
    """The full reply the offline provider gives to ``request``."""
    users = [m.text for m in request.messages if m.role == "user"]
    last_user = users[-1] if users and request.messages[-1].role == "user" else None
    spanish = _is_spanish(request, last_user)
    turn = len(users)
    if last_user is None:
        if spanish:
            return (
                "¡Hola! Soy el asistente sin conexión de voice-gateway. "
                "Puedo repetir lo que digas y recordar la conversación. ¿De qué quieres hablar?"
            )
        return (
            "Hello! I am the offline assistant of voice-gateway. "
            "I can repeat what you say and remember our conversation. "
            "What would you like to talk about?"
        )
    if spanish:
        parts = [
            f"Has dicho: «{_quote(last_user)}».",
            "Soy el proveedor sin conexión, así que solo repito lo que dices.",
        ]
        if turn > 1:
            before = _quote(users[-2])
            parts.append(
                f"Es el mensaje número {turn} de esta conversación; antes dijiste: «{before}»."
            )
        else:
            parts.append("Es el primer mensaje de esta conversación.")
        parts.append("Configura GEMINI_API_KEY para hablar con Gemini.")
    else:
        parts = [
            f'You said: "{_quote(last_user)}".',
            "I am the offline provider, so I can only echo you.",
        ]
        if turn > 1:
            before = _quote(users[-2])
            parts.append(
                f'This is message {turn} of our conversation; before that you said: "{before}".'
            )
        else:
            parts.append("This is the first message of our conversation.")
        parts.append("Set GEMINI_API_KEY to talk to Gemini.")
    return " ".join(parts)


def from_settings(settings: Settings) -> OfflineProvider:
    """The provider used when no model key is set (or ``GATEWAY_PROVIDER=offline``)."""
    return OfflineProvider(token_delay_s=settings.offline_token_delay_ms / 1000)


class OfflineProvider:
    """Deterministic, local replies streamed like a real model."""

    def __init__(self, *, token_chars: int = 4, token_delay_s: float = 0.02) -> None:
        if token_chars < 1:
            raise ValueError("token_chars must be at least 1")
        self._token_chars = token_chars
        self._token_delay_s = token_delay_s

    @property
    def name(self) -> str:
        return "offline"

    @property
    def model(self) -> str:
        return "offline-echo"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        """Yield the reply a few characters at a time, then its usage and finish."""
        reply = compose_reply(request)
        step = self._token_chars
        for start in range(0, len(reply), step):
            await asyncio.sleep(self._token_delay_s)
            yield reply[start : start + step]
        prompt_chars = sum(len(m.text) for m in request.messages) + len(
            request.system_instruction or ""
        )
        input_tokens, output_tokens = -(-prompt_chars // 4), -(-len(reply) // 4)
        yield Usage(input_tokens, output_tokens, input_tokens + output_tokens)
        yield Finish("stop")

    async def aclose(self) -> None:
        """Nothing to release."""
