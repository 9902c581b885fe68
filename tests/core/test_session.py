"""The session and turn state machine, driven directly with injected time."""

from __future__ import annotations

from gateway.core.codes import CloseCode, ErrorCode
from gateway.core.effects import CancelGeneration, Close, Effect, Send, StartGeneration
from gateway.core.events import (
    Error,
    HistoryTruncated,
    Interrupt,
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
    UserMessage,
)
from gateway.core.history import Message
from gateway.core.session import Session, SessionConfig

CONFIG = SessionConfig(provider="fake", model="fake-1", system_instruction="Be brief.")


def make() -> Session:
    session = Session("s1", "token", CONFIG)
    session.open()
    session.effects()
    return session


def sent(effects: list[Effect]) -> list[ServerEvent]:
    return [e.event for e in effects if isinstance(e, Send)]


def start(session: Session, text: str, now: float = 0.0, msg_id: str | None = None) -> str:
    session.receive(UserMessage(text, id=msg_id), now)
    (gen,) = [e for e in session.effects() if isinstance(e, StartGeneration)]
    return gen.request.turn_id


def test_open_sends_session_ready_at_seq_0_outside_the_log() -> None:
    session = Session("s1", "token", CONFIG)
    session.open()
    (ready,) = sent(session.effects())
    assert isinstance(ready, SessionReady)
    assert (ready.seq, ready.session_id, ready.resume_token) == (0, "s1", "token")
    assert len(session.replay) == 0
    assert (ready.provider, ready.model, ready.protocol) == ("fake", "fake-1", 1)


def test_a_turn_streams_chunks_then_ends_completed_with_latency() -> None:
    session = make()
    session.receive(UserMessage("Hello", id="u1"), 10.0)
    effects = session.effects()
    (start_ev,) = sent(effects)
    assert isinstance(start_ev, ResponseStart)
    assert start_ev.in_reply_to == "u1"
    (gen,) = [e for e in effects if isinstance(e, StartGeneration)]
    request = gen.request
    assert request.turn_id == start_ev.turn_id
    assert request.system_instruction == "Be brief."
    assert request.messages == (Message("user", "Hello"),)

    session.provider_delta(request.turn_id, "Hi there. How ", 10.2)
    session.provider_delta(request.turn_id, "are you?", 10.3)
    session.provider_done(request.turn_id, 10.5)
    events = sent(session.effects())
    chunks = [e for e in events if isinstance(e, ResponseTts)]
    assert [c.text for c in chunks] == ["Hi there.", "How are you?"]
    assert [c.index for c in chunks] == [0, 1]
    end = events[-1]
    assert isinstance(end, ResponseEnd)
    assert (end.status, end.text, end.spoken_text) == ("completed", "Hi there. How are you?", None)
    assert end.latency.first_token_ms == 200
    assert end.latency.total_ms == 500
    assert session.history[-1] == Message("assistant", "Hi there. How are you?")


def test_seq_grows_by_one_for_every_event() -> None:
    session = Session("s1", "token", CONFIG)
    session.open()
    turn = start(session, "One")
    session.provider_delta(turn, "A. B. C.", 1)
    session.provider_done(turn, 2)
    session.receive(Ping(id=7), 3)
    events = [e for e in session.replay.since(0) or []]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert session.seq == events[-1].seq


def test_new_message_supersedes_streaming_turn_before_new_start() -> None:
    session = make()
    first = start(session, "Tell me a story")
    session.provider_delta(first, "Once upon a time. There was", 1)
    session.effects()
    session.receive(UserMessage("Stop, something else"), 2)
    effects = session.effects()
    events = sent(effects)
    assert isinstance(events[0], ResponseEnd)
    assert (events[0].turn_id, events[0].status) == (first, "superseded")
    assert events[0].spoken_text == "Once upon a time."
    assert isinstance(events[1], ResponseStart)
    assert events[1].turn_id != first
    assert CancelGeneration(first) in effects
    # Late output of the superseded turn is dropped.
    session.provider_delta(first, " a dragon. The end.", 3)
    session.provider_done(first, 4)
    assert sent(session.effects()) == []
    # History: the heard part of the old turn, then the new user message.
    (gen,) = [e for e in effects if isinstance(e, StartGeneration)]
    assert gen.request.messages[-3:] == (
        Message("user", "Tell me a story"),
        Message("assistant", "Once upon a time."),
        Message("user", "Stop, something else"),
    )


def test_interrupt_keeps_only_heard_text() -> None:
    session = make()
    turn = start(session, "Explain")
    session.provider_delta(turn, "First point. Second point. Third", 1)
    session.effects()
    session.receive(Interrupt(turn_id=turn, heard_text="First point."), 2)
    effects = session.effects()
    (end,) = sent(effects)
    assert isinstance(end, ResponseEnd)
    assert (end.status, end.spoken_text) == ("interrupted", "First point.")
    assert end.text == "First point. Second point. Third"
    assert CancelGeneration(turn) in effects
    assert session.history[-1] == Message("assistant", "First point.")


def test_interrupt_without_a_streaming_turn_is_a_no_op() -> None:
    session = make()
    session.receive(Interrupt(), 1)
    session.receive(Interrupt(turn_id="t99", heard_text="x"), 1)
    assert session.effects() == []


def test_interrupt_after_completion_truncates_history() -> None:
    session = make()
    turn = start(session, "Hi")
    session.provider_delta(turn, "One. Two. Three.", 1)
    session.provider_done(turn, 2)
    session.effects()
    session.receive(Interrupt(turn_id=turn, heard_text="One."), 3)
    (ev,) = sent(session.effects())
    assert isinstance(ev, HistoryTruncated)
    assert (ev.turn_id, ev.spoken_text) == (turn, "One.")
    assert session.history[-1] == Message("assistant", "One.")


def test_provider_failure_sends_error_then_failed_end_and_session_continues() -> None:
    session = make()
    turn = start(session, "Hi")
    session.provider_delta(turn, "Partial sentence. And", 1)
    session.provider_failed(
        turn, 2, message="Gemini returned 503", retryable=True, detail="unavailable"
    )
    events = sent(session.effects())
    error, end = events[-2], events[-1]
    assert isinstance(error, Error)
    assert (error.code, error.turn_id, error.retryable, error.fatal) == (
        ErrorCode.PROVIDER_ERROR,
        turn,
        True,
        False,
    )
    assert isinstance(end, ResponseEnd)
    assert (end.status, end.reason) == ("failed", "unavailable")
    assert end.text == "Partial sentence. And"
    next_turn = start(session, "Again")
    assert next_turn != turn


def test_response_create_starts_a_turn_without_user_message() -> None:
    session = make()
    session.receive(ResponseCreate(instructions="Greet the user."), 0)
    effects = session.effects()
    (ev,) = sent(effects)
    assert isinstance(ev, ResponseStart)
    assert ev.in_reply_to is None
    (gen,) = [e for e in effects if isinstance(e, StartGeneration)]
    assert gen.request.instructions == "Greet the user."
    assert gen.request.messages == ()


def test_session_update_changes_language_and_instructions() -> None:
    session = make()
    session.receive(SessionUpdate(instructions="Habla español.", language="es-ES"), 0)
    (ev,) = sent(session.effects())
    assert isinstance(ev, SessionUpdated)
    assert (ev.language, ev.instructions) == ("es-ES", "Habla español.")
    session.receive(UserMessage("Hola"), 1)
    (gen,) = [e for e in session.effects() if isinstance(e, StartGeneration)]
    assert gen.request.language == "es-ES"
    assert gen.request.system_instruction == "Habla español."


def test_session_update_rejects_a_bad_language() -> None:
    session = make()
    session.receive(SessionUpdate(language="not a language!"), 0)
    (ev,) = sent(session.effects())
    assert isinstance(ev, Error)
    assert ev.code == ErrorCode.INVALID_FIELD
    assert session.language == "en"


def test_ping_gets_pong_with_same_id() -> None:
    session = make()
    session.receive(Ping(id="abc"), 0)
    (ev,) = sent(session.effects())
    assert isinstance(ev, Pong)
    assert ev.id == "abc"


def test_empty_and_oversize_text_are_rejected_without_a_turn() -> None:
    session = Session("s1", "t", SessionConfig(provider="p", model="m", max_text_chars=10))
    session.receive(UserMessage("   "), 0)
    session.receive(UserMessage("x" * 11), 0)
    events = sent(session.effects())
    assert [e.code for e in events if isinstance(e, Error)] == [
        ErrorCode.EMPTY_TEXT,
        ErrorCode.TEXT_TOO_LONG,
    ]
    assert session.streaming_turn_id is None
    assert session.history == ()


def test_session_end_interrupts_turn_then_closes() -> None:
    session = make()
    turn = start(session, "Hi")
    session.receive(SessionEnd(), 1)
    effects = session.effects()
    events = sent(effects)
    assert isinstance(events[0], ResponseEnd)
    assert (events[0].turn_id, events[0].status) == (turn, "interrupted")
    assert isinstance(events[1], SessionEnded)
    assert effects[-1] == Close(CloseCode.NORMAL, "ended by the client")
    session.receive(UserMessage("still there?"), 2)
    assert session.effects() == []


def test_history_given_to_a_provider_cannot_change_the_session() -> None:
    session = make()
    turn = start(session, "Hi")
    (gen_msgs) = session.history
    session.provider_delta(turn, "Hello.", 1)
    session.provider_done(turn, 2)
    assert gen_msgs == (Message("user", "Hi"),)
    assert isinstance(session.history, tuple)
