"""Conversation history: immutable messages and the request a turn sends to a provider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation, as the model should see it."""

    role: Role
    text: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Everything a provider needs to generate one assistant turn.

    ``messages`` is a tuple, so a provider can never mutate the session's history
    through a shared reference. It ends with the user's message, except for a turn
    the assistant starts by itself (``response.create``), where ``instructions``
    say what to do.
    """

    session_id: str
    turn_id: str
    system_instruction: str | None
    messages: tuple[Message, ...]
    instructions: str | None = None
    language: str | None = None
