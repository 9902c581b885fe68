"""Records the core hands to storage: turns as they start and end."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """A turn of a session; ``status`` is ``None`` while it streams. Times are Unix seconds."""

    session_id: str
    turn_id: str
    in_reply_to: str | None
    user_text: str | None
    status: str | None
    text: str
    spoken_text: str | None
    reason: str | None
    started_at: float
    ended_at: float | None
    first_token_ms: int | None
    first_chunk_ms: int | None
    total_ms: int | None
