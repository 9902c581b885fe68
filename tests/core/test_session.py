"""The session and turn state machine, driven directly with injected time."""

from __future__ import annotations

from gateway.core.codes import CloseCode, ErrorCode
from gateway.core.effects import CancelGeneration, Close, Effect, SaveTurn, Send, StartGeneration
from gateway.core.events import (
    Error,
    HistoryTruncated,
    Interrupt,
    Ping,
    PlaybackAck,
    Pong,
    ResponseCreate,
    ResponseEnd,
    ResponseStart,
    ResponseTts,
    ServerEvent,
    SessionEnd,
    SessionEnded,
    SessionReady,
    SessionResync,
    SessionUpdate,
    SessionUpdated,
    SetHistory,
    TranscriptTurn,
    UserDuplicate,
    UserMessage,
)
from gateway.core.history import Message
from gateway.core.session import Session, SessionConfig
from gateway.core.state import decode_state, encode_state

CONFIG = SessionConfig(provider="fake", model="fake-1", system_instruction="Be brief.")


def make() -> Session:
    return Session("s1", CONFIG)


def sent(effects: list[Effect]) -> list[ServerEvent]:
    return [e.event for e in effects if isinstance(e, Send)]


def start(session: Session, text: str, now: float = 0.0, msg_id: str | None = None) -> str:
    session.receive(UserMessage(text, id=msg_id), now)
    (gen,) = [e for e in session.effects() if isinstance(e, StartGeneration)]
    return gen.request.turn_id


def test_session_ready_is_a_connection_event_at_the_current_seq() -> None:
    session = make()
    ready = session.ready_event("token")
    assert isinstance(ready, SessionReady)
    assert (ready.seq, ready.session_id, ready.resume_token) == (0, "s1", "token")
    assert (ready.provider, ready.model, ready.protocol, ready.resumed) == (
        "fake",
        "fake-1",
        1,
        False,
    )
    assert session.effects() == []
    resumed = session.ready_event("token", resumed=True, seq=0)
    assert resumed.resumed is True


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
    session = make()
    turn = start(session, "One")
    session.provider_delta(turn, "A. B. C.", 1)
    session.provider_done(turn, 2)
    events = sent(session.effects())
    assert [e.seq for e in events] == list(range(2, len(events) + 2))
    assert session.seq == events[-1].seq
    session.receive(Ping(id=7), 3)
    (pong,) = sent(session.effects())
    assert isinstance(pong, Pong)
    assert pong.seq == session.seq == events[-1].seq  # a connection event takes no seq


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
    session = Session("s1", SessionConfig(provider="p", model="m", max_text_chars=10))
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


def test_a_resent_message_id_never_starts_a_second_turn() -> None:
    session = make()
    turn = start(session, "Book a table", msg_id="u-7")
    session.provider_delta(turn, "Done.", 1)
    session.provider_done(turn, 2)
    session.effects()
    session.receive(UserMessage("Book a table", id="u-7"), 3)
    effects = session.effects()
    (dup,) = sent(effects)
    assert isinstance(dup, UserDuplicate)
    assert (dup.id, dup.turn_id) == ("u-7", turn)
    assert not [e for e in effects if isinstance(e, StartGeneration)]
    assert session.history.count(Message("user", "Book a table")) == 1


def test_playback_acks_decide_what_an_interrupt_keeps() -> None:
    session = make()
    turn = start(session, "List them")
    session.provider_delta(turn, "One. Two. Three. Four", 1)
    session.effects()
    session.receive(PlaybackAck(turn, 0), 2)
    session.receive(PlaybackAck(turn, 1), 3)
    session.receive(Interrupt(turn_id=turn), 4)
    end = [e for e in sent(session.effects()) if isinstance(e, ResponseEnd)][0]
    assert end.spoken_text == "One. Two."
    assert session.history[-1] == Message("assistant", "One. Two.")


def test_acks_on_a_completed_turn_let_a_late_interrupt_truncate_it() -> None:
    session = make()
    turn = start(session, "List them")
    session.provider_delta(turn, "One. Two. Three.", 1)
    session.provider_done(turn, 2)
    session.receive(PlaybackAck(turn, 0), 3)
    session.effects()
    session.receive(Interrupt(turn_id=turn), 4)
    (truncated,) = sent(session.effects())
    assert isinstance(truncated, HistoryTruncated)
    assert truncated.spoken_text == "One."
    assert session.history[-1] == Message("assistant", "One.")


def test_an_ack_for_a_chunk_not_sent_is_an_error() -> None:
    session = make()
    turn = start(session, "Hi")
    session.receive(PlaybackAck(turn, 3), 1)
    (error,) = sent(session.effects())
    assert isinstance(error, Error)
    assert error.code == ErrorCode.INVALID_FIELD


def test_turn_records_are_saved_at_start_and_end() -> None:
    session = make()
    session.receive(UserMessage("Hi", id="u1"), 10.0)
    started = [e.record for e in session.effects() if isinstance(e, SaveTurn)]
    session.provider_delta("t1", "Hello.", 10.1)
    session.provider_done("t1", 10.4)
    ended = [e.record for e in session.effects() if isinstance(e, SaveTurn)]
    assert [(r.turn_id, r.status, r.user_text) for r in started] == [("t1", None, "Hi")]
    (end,) = ended
    assert (end.status, end.text, end.in_reply_to, end.total_ms) == (
        "completed",
        "Hello.",
        "u1",
        400,
    )


def test_state_round_trips_through_bytes() -> None:
    session = make()
    turn = start(session, "Hi", msg_id="u1")
    session.provider_delta(turn, "Hello. There", 1)
    session.effects()
    state = session.state()
    assert decode_state(encode_state(state)) == state
    assert state.open_turn is not None
    assert state.open_turn.turn_id == turn


def test_restore_fails_the_turn_a_crash_cut_and_keeps_going() -> None:
    session = make()
    turn = start(session, "Tell me", msg_id="u1")
    session.provider_delta(turn, "First part. Second", 1)
    events = sent(session.effects())
    state = session.state()
    restored = Session.restore(
        "s1", CONFIG, state, last_seq=events[-1].seq, open_turn_chunks=("First part.",), now=5
    )
    (end,) = sent(restored.effects())
    assert isinstance(end, ResponseEnd)
    assert (end.turn_id, end.status, end.spoken_text) == (turn, "failed", "First part.")
    assert end.seq == events[-1].seq + 1
    assert "restarted" in (end.reason or "")
    assert restored.history[-1] == Message("assistant", "First part.")
    restored.receive(UserMessage("Again", id="u1"), 6)
    assert isinstance(sent(restored.effects())[0], UserDuplicate)
    next_turn = start(restored, "Go on")
    assert next_turn == "t2"


def test_resync_event_carries_the_transcript() -> None:
    session = make()
    turn = start(session, "Hi")
    session.provider_delta(turn, "Hello.", 1)
    session.provider_done(turn, 2)
    resync = session.resync_event(session.seq)
    assert isinstance(resync, SessionResync)
    assert resync.transcript == (Message("user", "Hi"), Message("assistant", "Hello."))
    assert resync.seq == session.seq


def test_transcript_turn_replaces_history_and_supersedes() -> None:
    session = make()
    old = start(session, "Hi")
    transcript = (Message("assistant", "Welcome."), Message("user", "What time is it?"))
    session.receive(TranscriptTurn(transcript, reply_to="7", instructions="Be short."), 1)
    effects = session.effects()
    events = sent(effects)
    assert isinstance(events[0], ResponseEnd)
    assert (events[0].turn_id, events[0].status) == (old, "superseded")
    assert isinstance(events[1], ResponseStart)
    assert events[1].in_reply_to == "7"
    (gen,) = [e for e in effects if isinstance(e, StartGeneration)]
    assert gen.request.messages == transcript
    assert gen.request.instructions == "Be short."
    session.receive(SetHistory((Message("user", "Only this"),)), 2)
    assert session.history == (Message("user", "Only this"),)


def test_a_turn_restarts_only_while_no_chunk_was_sent() -> None:
    session = make()
    turn = start(session, "Hi")
    session.provider_delta(turn, "Half a sent", 1)
    assert session.restart_turn(turn) is True
    session.provider_delta(turn, "Whole. And more", 2)
    assert [e.text for e in sent(session.effects()) if isinstance(e, ResponseTts)] == ["Whole."]
    assert session.restart_turn(turn) is False
    assert session.restart_turn("t99") is False


def test_control_characters_never_reach_the_model() -> None:
    session = make()
    session.receive(UserMessage("\x00\x01\x02 \x7f"), 0)
    (error,) = sent(session.effects())
    assert isinstance(error, Error)
    assert error.code == ErrorCode.EMPTY_TEXT
    turn = start(session, "Hi\x00 there\x1b[31m")
    assert turn == "t1"
    assert session.history[-1] == Message("user", "Hi there[31m")


def test_a_stale_transcript_turn_is_ignored_even_after_a_restore() -> None:
    session = make()
    transcript = (Message("user", "hi"),)
    session.receive(TranscriptTurn(transcript, reply_to="5", ordinal=5), 0)
    assert any(isinstance(e, StartGeneration) for e in session.effects())
    for stale in (5, 4):
        session.receive(TranscriptTurn(transcript, reply_to=str(stale), ordinal=stale), 1)
        assert session.effects() == []
    restored = Session.restore(
        "s1", CONFIG, decode_state(encode_state(session.state())), last_seq=session.seq, now=2
    )
    restored.effects()
    restored.receive(TranscriptTurn(transcript, reply_to="5", ordinal=5), 3)
    assert restored.effects() == []
    restored.receive(TranscriptTurn(transcript, reply_to="6", ordinal=6), 4)
    assert any(isinstance(e, StartGeneration) for e in restored.effects())


def test_an_ended_session_stays_ended_after_a_restore() -> None:
    session = make()
    session.receive(SessionEnd(), 0)
    session.effects()
    state = decode_state(encode_state(session.state()))
    assert state.ended
    restored = Session.restore("s1", CONFIG, state, last_seq=session.seq, now=1)
    restored.receive(UserMessage("anyone?"), 2)
    assert restored.closed
    assert restored.effects() == []
