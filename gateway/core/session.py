"""The session and turn state machine.

Feed it client events and provider output; drain :meth:`Session.effects` and carry
them out. At most one turn streams at a time. A turn always ends with exactly one
``response.end``, and no chunk of a turn is emitted after it: provider output for
any turn but the streaming one is dropped by turn id.

History is a tuple of immutable messages, so a request handed to a provider can
never change what the session keeps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.chunker import Chunker, ChunkerConfig
from gateway.core.codes import CloseCode, ErrorCode
from gateway.core.effects import CancelGeneration, Close, Effect, Send, StartGeneration
from gateway.core.events import (
    ClientEvent,
    Error,
    HistoryTruncated,
    Interrupt,
    Latency,
    Ping,
    Pong,
    ResponseCreate,
    ResponseEnd,
    ResponseStart,
    ResponseTts,
    ServerEvent,
    SessionEnd,
    SessionEnded,
    SessionReady,
    SessionUpdate,
    SessionUpdated,
    TurnStatus,
    UserMessage,
)
from gateway.core.history import GenerationRequest, Message
from gateway.core.replay import ReplayLog

_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Per-session settings, fixed when the session is made."""

    provider: str
    model: str
    system_instruction: str | None = None
    language: str = "en"
    max_text_chars: int = 4000
    replay_capacity: int = 1024
    first_chunk_min_chars: int = 40
    first_chunk_max_chars: int = 120
    max_chunk_chars: int = 300


class _Turn:
    """Mutable state of the one streaming turn."""

    __slots__ = (
        "chunker",
        "chunks",
        "first_chunk_at",
        "first_token_at",
        "id",
        "in_reply_to",
        "parts",
        "started_at",
    )

    def __init__(self, turn_id: str, in_reply_to: str | None, started_at: float, chunker: Chunker):
        self.id = turn_id
        self.in_reply_to = in_reply_to
        self.started_at = started_at
        self.chunker = chunker
        self.parts: list[str] = []
        self.chunks: list[str] = []
        self.first_token_at: float | None = None
        self.first_chunk_at: float | None = None


def _ms(start: float, end: float | None) -> int | None:
    return None if end is None else max(0, round((end - start) * 1000))


class Session:
    """One conversation: history, the streaming turn, outbound ``seq`` and replay log."""

    def __init__(
        self,
        session_id: str,
        resume_token: str,
        config: SessionConfig,
        *,
        history: Sequence[Message] = (),
    ) -> None:
        self.id = session_id
        self._resume_token = resume_token
        self._config = config
        self._instructions = config.system_instruction
        self._language = config.language
        self._history: tuple[Message, ...] = tuple(history)
        self._seq = 0
        self._turns = 0
        self._messages = 0
        self._turn: _Turn | None = None
        self._last_reply: tuple[str, int] | None = None
        self._effects: list[Effect] = []
        self.replay = ReplayLog(config.replay_capacity)
        self.closed = False

    # --- read-only views ---------------------------------------------------------

    @property
    def history(self) -> tuple[Message, ...]:
        return self._history

    @property
    def language(self) -> str:
        return self._language

    @property
    def instructions(self) -> str | None:
        return self._instructions

    @property
    def streaming_turn_id(self) -> str | None:
        return self._turn.id if self._turn else None

    @property
    def seq(self) -> int:
        return self._seq

    def effects(self) -> list[Effect]:
        """Take the effects produced since the last call, in order."""
        out, self._effects = self._effects, []
        return out

    # --- inputs ------------------------------------------------------------------

    def open(self) -> None:
        """Greet a newly connected client with ``session.ready``.

        ``session.ready`` is a connection event: its ``seq`` is where the session
        stands (0 for a new one) and it is neither counted nor logged for replay.
        """
        self._effects.append(
            Send(
                SessionReady(
                    session_id=self.id,
                    seq=self._seq,
                    resume_token=self._resume_token,
                    provider=self._config.provider,
                    model=self._config.model,
                    language=self._language,
                )
            )
        )

    def receive(self, event: ClientEvent, now: float) -> None:
        """Handle one client event."""
        if self.closed:
            return
        match event:
            case UserMessage():
                self._on_user_message(event, now)
            case Interrupt():
                self._on_interrupt(event, now)
            case ResponseCreate():
                self._start_turn(None, now, instructions=event.instructions)
            case SessionUpdate():
                self._on_session_update(event)
            case Ping():
                self._send(Pong(session_id=self.id, seq=self._next_seq(), id=event.id))
            case SessionEnd():
                self.end("ended by the client", now)

    def reject(
        self, code: ErrorCode, message: str, *, fatal: bool = False, now: float = 0.0
    ) -> None:
        """Answer bad input with an ``error``; a fatal one ends the session."""
        if self.closed:
            return
        self._send(
            Error(session_id=self.id, seq=self._next_seq(), code=code, message=message, fatal=fatal)
        )
        if fatal:
            self.end(f"fatal error: {code}", now, close_code=CloseCode.INTERNAL_ERROR)

    def provider_delta(self, turn_id: str, text: str, now: float) -> None:
        """A piece of the reply for ``turn_id`` arrived."""
        turn = self._turn
        if turn is None or turn.id != turn_id or not text:
            return
        if turn.first_token_at is None:
            turn.first_token_at = now
        turn.parts.append(text)
        for chunk in turn.chunker.push(text):
            self._send_chunk(turn, chunk, now)

    def provider_done(self, turn_id: str, now: float) -> None:
        """The reply for ``turn_id`` is complete."""
        turn = self._turn
        if turn is None or turn.id != turn_id:
            return
        for chunk in turn.chunker.flush():
            self._send_chunk(turn, chunk, now)
        self._end_turn(turn, "completed", now, reason=None)

    def provider_failed(
        self,
        turn_id: str,
        now: float,
        *,
        message: str,
        retryable: bool,
        detail: str | None = None,
        code: ErrorCode = ErrorCode.PROVIDER_ERROR,
    ) -> None:
        """Generating ``turn_id`` failed: say why, then end the turn ``failed``."""
        turn = self._turn
        if turn is None or turn.id != turn_id:
            return
        self._send(
            Error(
                session_id=self.id,
                seq=self._next_seq(),
                code=code,
                message=message,
                turn_id=turn_id,
                retryable=retryable,
                detail=detail,
            )
        )
        self._end_turn(turn, "failed", now, reason=detail or str(code))

    def end(self, reason: str, now: float, *, close_code: int = CloseCode.NORMAL) -> None:
        """End the session: stop the streaming turn, say ``session.ended``, close."""
        if self.closed:
            return
        if self._turn is not None:
            self._end_turn(self._turn, "interrupted", now, reason="session ended")
        self._send(SessionEnded(session_id=self.id, seq=self._next_seq(), reason=reason))
        self._effects.append(Close(close_code, reason))
        self.closed = True

    def disconnected(self, now: float) -> None:
        """The client went away: stop generating for nobody."""
        if self._turn is not None:
            self._end_turn(self._turn, "interrupted", now, reason="client disconnected")
        self.closed = True

    # --- handlers ----------------------------------------------------------------

    def _on_user_message(self, event: UserMessage, now: float) -> None:
        text = event.text.strip()
        if not text:
            self.reject(ErrorCode.EMPTY_TEXT, "user.message text is empty")
            return
        if len(text) > self._config.max_text_chars:
            self.reject(
                ErrorCode.TEXT_TOO_LONG,
                f"user.message text has {len(text)} characters; "
                f"the limit is {self._config.max_text_chars}",
            )
            return
        self._messages += 1
        message_id = event.id if event.id is not None else f"m{self._messages}"
        if self._turn is not None:
            self._end_turn(self._turn, "superseded", now, reason="a new user message arrived")
        self._history = (*self._history, Message("user", text))
        self._start_turn(message_id, now, instructions=None)

    def _on_interrupt(self, event: Interrupt, now: float) -> None:
        turn = self._turn
        if turn is not None and event.turn_id in (None, turn.id):
            self._end_turn(
                turn,
                "interrupted",
                now,
                reason="interrupted by the client",
                heard_text=event.heard_text,
            )
            return
        last = self._last_reply
        if event.heard_text is None or last is None or event.turn_id != last[0]:
            return  # nothing streaming, or an old turn: interrupting is idempotent
        heard = event.heard_text.strip()
        turn_id, index = last
        history = list(self._history)
        if heard:
            history[index] = Message("assistant", heard)
        else:
            del history[index]
            self._last_reply = None
        self._history = tuple(history)
        self._send(
            HistoryTruncated(
                session_id=self.id, seq=self._next_seq(), turn_id=turn_id, spoken_text=heard
            )
        )

    def _on_session_update(self, event: SessionUpdate) -> None:
        if event.language is not None and not _LANGUAGE_TAG.match(event.language):
            self.reject(
                ErrorCode.INVALID_FIELD,
                f"session.update language {event.language[:40]!r} is not a language tag "
                "like 'en', 'es-ES' or 'pt-BR'",
            )
            return
        if event.instructions is not None:
            self._instructions = event.instructions.strip() or self._config.system_instruction
        if event.language is not None:
            self._language = event.language.replace("_", "-")
        self._send(
            SessionUpdated(
                session_id=self.id,
                seq=self._next_seq(),
                language=self._language,
                instructions=self._instructions,
            )
        )

    # --- turns -------------------------------------------------------------------

    def _start_turn(self, in_reply_to: str | None, now: float, *, instructions: str | None) -> None:
        if self._turn is not None:
            self._end_turn(self._turn, "superseded", now, reason="a new response was requested")
        self._turns += 1
        cfg = self._config
        chunker = Chunker(
            ChunkerConfig(
                language=self._language,
                first_chunk_min_chars=cfg.first_chunk_min_chars,
                first_chunk_max_chars=cfg.first_chunk_max_chars,
                max_chunk_chars=cfg.max_chunk_chars,
            )
        )
        turn = _Turn(f"t{self._turns}", in_reply_to, now, chunker)
        self._turn = turn
        self._send(
            ResponseStart(
                session_id=self.id, seq=self._next_seq(), turn_id=turn.id, in_reply_to=in_reply_to
            )
        )
        self._effects.append(
            StartGeneration(
                GenerationRequest(
                    session_id=self.id,
                    turn_id=turn.id,
                    system_instruction=self._instructions,
                    messages=self._history,
                    instructions=instructions,
                    language=self._language,
                )
            )
        )

    def _send_chunk(self, turn: _Turn, chunk: str, now: float) -> None:
        if turn.first_chunk_at is None:
            turn.first_chunk_at = now
        self._send(
            ResponseTts(
                session_id=self.id,
                seq=self._next_seq(),
                turn_id=turn.id,
                index=len(turn.chunks),
                text=chunk,
            )
        )
        turn.chunks.append(chunk)

    def _end_turn(
        self,
        turn: _Turn,
        status: TurnStatus,
        now: float,
        *,
        reason: str | None,
        heard_text: str | None = None,
    ) -> None:
        self._turn = None
        if status in ("interrupted", "superseded"):
            self._effects.append(CancelGeneration(turn.id))
        text = "".join(turn.parts)
        if status == "completed":
            kept = text
        elif heard_text is not None:
            kept = heard_text.strip()
        else:
            kept = " ".join(turn.chunks)
        if kept:
            self._history = (*self._history, Message("assistant", kept))
            self._last_reply = (turn.id, len(self._history) - 1)
        else:
            self._last_reply = None
        self._send(
            ResponseEnd(
                session_id=self.id,
                seq=self._next_seq(),
                turn_id=turn.id,
                status=status,
                text=text,
                spoken_text=None if status == "completed" else kept,
                reason=reason,
                latency=Latency(
                    first_token_ms=_ms(turn.started_at, turn.first_token_at),
                    first_chunk_ms=_ms(turn.started_at, turn.first_chunk_at),
                    total_ms=_ms(turn.started_at, now) or 0,
                ),
            )
        )

    # --- output ------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, event: ServerEvent) -> None:
        self.replay.append(event)
        self._effects.append(Send(event))
