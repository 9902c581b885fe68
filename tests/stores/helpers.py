"""Builders for store test data."""

from __future__ import annotations

import json

from gateway.stores.base import SessionMeta, StoredEvent, TurnRecord


def meta(
    session_id: str, *, created_at: float = 1000.0, updated_at: float | None = None
) -> SessionMeta:
    """Metadata for a test session (``updated_at`` defaults to ``created_at``)."""
    return SessionMeta(
        session_id=session_id,
        token_hash=f"hash-{session_id}",
        principal=f"user-{session_id}",
        created_at=created_at,
        updated_at=created_at if updated_at is None else updated_at,
    )


def event(
    seq: int, *, session_id: str = "s", turn_id: str | None = "t1", size: int = 0
) -> StoredEvent:
    """A ``response.tts`` event whose JSON names its session and seq."""
    data = json.dumps(
        {"type": "response.tts", "session_id": session_id, "seq": seq, "text": "x" * size}
    )
    return StoredEvent(seq=seq, type="response.tts", turn_id=turn_id, data=data)


def events(first: int, last: int, *, session_id: str = "s", size: int = 0) -> list[StoredEvent]:
    """Events ``first`` … ``last`` inclusive."""
    return [event(seq, session_id=session_id, size=size) for seq in range(first, last + 1)]


def turn(
    turn_id: str,
    *,
    session_id: str = "s",
    started_at: float = 1000.0,
    status: str | None = None,
    text: str = "",
) -> TurnRecord:
    """A turn; streaming (no end, no timings) while ``status`` is ``None``."""
    done = status is not None
    return TurnRecord(
        session_id=session_id,
        turn_id=turn_id,
        in_reply_to=f"msg-{turn_id}",
        user_text=f"question {turn_id}",
        status=status,
        text=text,
        spoken_text=text if done else None,
        reason="stop" if done else None,
        started_at=started_at,
        ended_at=started_at + 2.5 if done else None,
        first_token_ms=120 if done else None,
        first_chunk_ms=340 if done else None,
        total_ms=2500 if done else None,
    )
