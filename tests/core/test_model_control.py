"""Honest endings, usage, the token budget, fallback lines and generation settings
in the session core; the history cut in :mod:`gateway.core.context`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.core import wire
from gateway.core.codes import ErrorCode
from gateway.core.context import ContextBudget, estimate_tokens, fit_history
from gateway.core.effects import Effect, Send, StartGeneration
from gateway.core.events import (
    Error,
    ResponseCreate,
    ResponseEnd,
    ResponseTts,
    ServerEvent,
    SessionUpdate,
    SessionUpdated,
    TranscriptTurn,
    UserMessage,
)
from gateway.core.history import Finish, GenerationRequest, GenerationSettings, Message, Usage
from gateway.core.session import Session, SessionConfig, fallback_line
from gateway.core.state import decode_state, encode_state

CONFIG = SessionConfig(provider="fake", model="fake-1")
USAGE = Usage(input_tokens=100, output_tokens=20, total_tokens=130, thinking_tokens=10)


def sent(effects: list[Effect]) -> list[ServerEvent]:
    return [e.event for e in effects if isinstance(e, Send)]


def requests(effects: list[Effect]) -> list[GenerationRequest]:
    return [e.request for e in effects if isinstance(e, StartGeneration)]


def ask(session: Session, text: str = "Hello") -> tuple[str, list[ServerEvent], GenerationRequest]:
    session.receive(UserMessage(text), 0.0)
    effects = session.effects()
    (request,) = requests(effects)
    return request.turn_id, sent(effects), request


def finish(
    session: Session, turn_id: str, text: str | None, end: Finish | None, usage: Usage | None = None
) -> list[ServerEvent]:
    if text is not None:
        session.provider_delta(turn_id, text, 0.5)
    if usage is not None:
        session.provider_usage(turn_id, usage)
    session.provider_done(turn_id, 1.0, end)
    return sent(session.effects())


def end_of(events: list[ServerEvent]) -> ResponseEnd:
    (end,) = [e for e in events if isinstance(e, ResponseEnd)]
    return end


# -- endings ------------------------------------------------------------------------


def test_a_blocked_reply_fails_with_detail_blocked_and_speaks_none_of_its_rest() -> None:
    session = Session("s1", CONFIG)
    turn_id, _, _ = ask(session)
    session.provider_delta(turn_id, "Here is a first sentence that is long enough. And the", 0.2)
    first = sent(session.effects())
    events = finish(session, turn_id, " rest of it.", Finish("blocked", raw="SAFETY"))

    assert [e.text for e in first if isinstance(e, ResponseTts)] == [
        "Here is a first sentence that is long enough."
    ]
    assert not any(isinstance(e, ResponseTts) for e in events)
    (error,) = [e for e in events if isinstance(e, Error)]
    assert (error.code, error.detail, error.retryable, error.turn_id) == (
        ErrorCode.PROVIDER_ERROR,
        "blocked",
        False,
        turn_id,
    )
    assert "SAFETY" in error.message
    end = end_of(events)
    assert (end.status, end.reason) == ("failed", "blocked")
    assert session.history[-1] == Message(
        "assistant", "Here is a first sentence that is long enough."
    )


@pytest.mark.parametrize("end", [None, Finish("stop", raw="STOP"), Finish("max_tokens")])
@pytest.mark.parametrize("text", [None, "", "   "])
def test_an_empty_reply_is_never_a_silent_completed(end: Finish | None, text: str | None) -> None:
    session = Session("s1", CONFIG)
    turn_id, _, _ = ask(session)

    events = finish(session, turn_id, text, end)

    (error,) = [e for e in events if isinstance(e, Error)]
    assert error.detail == "empty_reply"
    assert (end_of(events).status, end_of(events).reason) == ("failed", "empty_reply")
    assert session.history == (Message("user", "Hello"),)


def test_a_reply_cut_at_the_token_limit_completes_with_reason_max_tokens() -> None:
    session = Session("s1", CONFIG)
    turn_id, _, _ = ask(session)

    events = finish(session, turn_id, "The answer is that the", Finish("max_tokens", raw="length"))

    end = end_of(events)
    assert (end.status, end.reason, end.text) == (
        "completed",
        "max_tokens",
        "The answer is that the",
    )
    assert [e.text for e in events if isinstance(e, ResponseTts)] == ["The answer is that the"]


def test_a_reply_that_stopped_for_another_reason_fails_incomplete() -> None:
    session = Session("s1", CONFIG)
    turn_id, _, _ = ask(session)

    events = finish(
        session, turn_id, "Let me check", Finish("other", raw="MALFORMED_FUNCTION_CALL")
    )

    (error,) = [e for e in events if isinstance(e, Error)]
    assert error.detail == "incomplete"
    assert "MALFORMED_FUNCTION_CALL" in error.message
    assert end_of(events).status == "failed"


def test_a_normal_stop_completes_without_reason() -> None:
    session = Session("s1", CONFIG)
    turn_id, _, _ = ask(session)

    end = end_of(finish(session, turn_id, "Fine, thanks.", Finish("stop", raw="STOP")))

    assert (end.status, end.reason) == ("completed", None)


# -- fallback line ------------------------------------------------------------------


FALLBACK = (
    ("en", "Sorry, I had a problem. Could you say that again?"),
    ("es", "Perdón, ¿puede repetir?"),
)


def test_a_failed_turn_speaks_the_fallback_line_in_the_session_language() -> None:
    session = Session("s1", replace(CONFIG, fallback_text=FALLBACK, language="es-MX"))
    turn_id, _, _ = ask(session, "Hola")

    session.provider_failed(turn_id, 1.0, message="down", retryable=True, detail="unavailable")
    events = sent(session.effects())

    kinds = [e.type for e in events]
    assert kinds == ["error", "response.tts", "response.end"]
    tts = events[1]
    assert isinstance(tts, ResponseTts)
    assert (tts.text, tts.index) == ("Perdón, ¿puede repetir?", 0)
    end = end_of(events)
    assert (end.status, end.text, end.spoken_text) == ("failed", "", "Perdón, ¿puede repetir?")
    assert session.history[-1] == Message("assistant", "Perdón, ¿puede repetir?")


def test_a_blocked_reply_also_gets_the_fallback_after_what_was_spoken() -> None:
    session = Session(
        "s1", replace(CONFIG, fallback_text=(("*", "Let us talk about something else."),))
    )
    turn_id, _, _ = ask(session)
    session.provider_delta(turn_id, "This first sentence is long enough to be sent. Then", 0.1)
    session.effects()

    events = finish(session, turn_id, None, Finish("blocked"))

    assert [e.text for e in events if isinstance(e, ResponseTts)] == [
        "Let us talk about something else."
    ]
    end = end_of(events)
    assert end.text == "This first sentence is long enough to be sent. Then"
    assert end.spoken_text == (
        "This first sentence is long enough to be sent. Let us talk about something else."
    )


def test_no_fallback_line_is_spoken_without_one_configured_or_for_an_interrupt() -> None:
    session = Session("s1", CONFIG)
    turn_id, _, _ = ask(session)
    session.provider_failed(turn_id, 1.0, message="down", retryable=True)
    assert not any(isinstance(e, ResponseTts) for e in sent(session.effects()))

    session = Session("s1", replace(CONFIG, fallback_text=FALLBACK))
    ask(session)
    session.receive(UserMessage("Another"), 0.5)
    assert not any(isinstance(e, ResponseTts) for e in sent(session.effects()))


def test_fallback_line_picks_exact_tag_then_primary_subtag_then_star() -> None:
    lines = (("pt-BR", "br"), ("pt", "pt"), ("*", "any"))
    assert fallback_line(lines, "pt-BR") == "br"
    assert fallback_line(lines, "pt-PT") == "pt"
    assert fallback_line(lines, "de") == "any"
    assert fallback_line((("en", "x"),), "de") is None


# -- usage and the budget -----------------------------------------------------------


def test_usage_reaches_response_end_and_adds_up_per_session() -> None:
    session = Session("s1", CONFIG)
    turn_id, _, _ = ask(session)
    end = end_of(finish(session, turn_id, "Hi.", Finish("stop"), USAGE))
    assert end.usage == USAGE
    assert wire.encode(end).count('"usage":{"input_tokens":100,"output_tokens":20') == 1

    turn_id, _, _ = ask(session, "Again")
    finish(session, turn_id, "Hi again.", None, USAGE)

    assert session.usage == Usage(200, 40, 260, cached_tokens=None, thinking_tokens=20)
    restored = Session.restore(
        "s1", CONFIG, decode_state(encode_state(session.state())), last_seq=session.seq, now=2.0
    )
    assert restored.usage == session.usage


def test_a_turn_without_counts_has_no_usage() -> None:
    session = Session("s1", CONFIG)
    turn_id, _, _ = ask(session)
    assert end_of(finish(session, turn_id, "Hi.", None)).usage is None
    assert session.usage.total_tokens == 0


def test_the_token_budget_refuses_further_turns_with_a_documented_code() -> None:
    session = Session("s1", replace(CONFIG, max_session_tokens=250))
    turn_id, _, _ = ask(session)
    finish(session, turn_id, "Hi.", None, USAGE)  # 130 used: still below
    turn_id, _, _ = ask(session, "Two")
    finish(session, turn_id, "Hi.", None, USAGE)  # 260 used: over
    history = session.history

    for event in (UserMessage("Three"), ResponseCreate(), TranscriptTurn((Message("user", "x"),))):
        session.receive(event, 3.0)
        effects = session.effects()
        assert requests(effects) == []
        (error,) = sent(effects)
        assert isinstance(error, Error)
        assert error.code == ErrorCode.TOKEN_BUDGET_EXHAUSTED
        assert "260" in error.message
        assert "250" in error.message
    assert session.history == history


# -- generation settings ------------------------------------------------------------


def test_session_update_changes_the_generation_settings_of_the_next_turns() -> None:
    config = replace(
        CONFIG, generation=GenerationSettings(temperature=0.7, thinking_level="minimal")
    )
    session = Session("s1", config)
    _, _, request = ask(session)
    assert request.settings == GenerationSettings(temperature=0.7, thinking_level="minimal")

    event = wire.decode(
        '{"type":"session.update","temperature":0.2,"max_output_tokens":80,"thinking_budget":0}',
        max_bytes=10_000,
    )
    assert isinstance(event, SessionUpdate)
    session.receive(event, 1.0)
    (updated,) = sent(session.effects())
    assert isinstance(updated, SessionUpdated)
    expected = GenerationSettings(temperature=0.2, max_output_tokens=80, thinking_budget=0)
    assert updated.generation == expected
    assert '"generation":{"temperature":0.2,"max_output_tokens":80' in wire.encode(updated)

    session.receive(UserMessage("Next"), 2.0)
    (request,) = requests(session.effects())
    assert request.settings == expected
    restored = Session.restore(
        "s1", config, decode_state(encode_state(session.state())), last_seq=session.seq, now=3.0
    )
    assert restored.generation == expected


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"session.update","temperature":3}',
        '{"type":"session.update","temperature":"hot"}',
        '{"type":"session.update","max_output_tokens":0}',
        '{"type":"session.update","thinking_level":"extreme"}',
        '{"type":"session.update","thinking_budget":-2}',
    ],
)
def test_bad_generation_settings_are_invalid_fields(frame: str) -> None:
    decoded = wire.decode(frame, max_bytes=10_000)
    assert isinstance(decoded, wire.WireError)
    assert decoded.code == ErrorCode.INVALID_FIELD


def test_thinking_level_and_budget_together_are_refused() -> None:
    session = Session("s1", CONFIG)
    event = wire.decode(
        '{"type":"session.update","thinking_level":"low","thinking_budget":100}', max_bytes=10_000
    )
    assert isinstance(event, SessionUpdate)
    session.receive(event, 0.0)
    (error,) = sent(session.effects())
    assert isinstance(error, Error)
    assert error.code == ErrorCode.INVALID_FIELD
    assert session.generation == GenerationSettings()


# -- the bounded context --------------------------------------------------------------


def conversation(turns: int, chars: int = 40) -> tuple[Message, ...]:
    out: list[Message] = []
    for i in range(turns):
        out += [
            Message("user", f"q{i} " + "x" * chars),
            Message("assistant", f"a{i} " + "y" * chars),
        ]
    return tuple(out)


def test_a_long_history_is_cut_oldest_first_before_a_user_message() -> None:
    history = (*conversation(50), Message("user", "the question"))
    cost = estimate_tokens(history[0])

    kept = fit_history(history, ContextBudget(max_tokens=cost * 9))

    assert kept[0].role == "user"
    assert kept[-1] == Message("user", "the question")
    assert kept == history[-len(kept) :]
    assert sum(estimate_tokens(m) for m in kept) <= cost * 9
    assert len(kept) == 9  # four whole exchanges and the question


def test_a_message_limit_keeps_whole_exchanges() -> None:
    history = (*conversation(10), Message("user", "now"))
    kept = fit_history(history, ContextBudget(max_messages=4))
    assert [m.role for m in kept] == ["user", "assistant", "user"]
    assert kept[-1].text == "now"


def test_what_fits_is_sent_whole_and_the_last_question_always_goes() -> None:
    history = (Message("assistant", "Welcome!"), Message("user", "hi"))
    assert fit_history(history, ContextBudget(max_tokens=1000)) == history
    huge = (*conversation(3), Message("user", "z" * 10_000))
    assert fit_history(huge, ContextBudget(max_tokens=10)) == (huge[-1],)
    assert fit_history(huge, ContextBudget()) == huge


def test_the_session_sends_the_cut_history_and_keeps_the_whole_one() -> None:
    session = Session("s1", replace(CONFIG, context=ContextBudget(max_messages=3)))
    for i in range(5):
        turn_id, _, _ = ask(session, f"question {i}")
        finish(session, turn_id, f"Answer {i}.", None)
    _, _, request = ask(session, "last")

    assert [m.text for m in request.messages] == ["question 4", "Answer 4.", "last"]
    assert len(session.history) == 11
    assert session.state().history == session.history
