"""Function calls in the session core: client, server and call-control tools, with
injected time."""

from __future__ import annotations

import orjson
import pytest

from gateway.core import wire
from gateway.core.codes import ErrorCode
from gateway.core.effects import (
    CancelGeneration,
    Effect,
    RunTool,
    Send,
    StartGeneration,
    WakeAt,
)
from gateway.core.events import (
    Error,
    FunctionResult,
    Interrupt,
    ResponseCallControl,
    ResponseEnd,
    ResponseFunctionCall,
    ResponseTts,
    ServerEvent,
    SessionUpdate,
    SessionUpdated,
    TranscriptTurn,
    UserMessage,
)
from gateway.core.history import FunctionCall, Message, ToolSpec
from gateway.core.session import MAX_TOOL_ROUNDS, Session, SessionConfig
from gateway.core.state import decode_state, encode_state
from gateway.core.tools import END_CALL, TRANSFER_CALL, ToolError, check_tool
from gateway.core.wire import WireError

WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
SERVER = ToolSpec("lookup_order", "An order.", {"type": "object"}, executor="server")
CONFIG = SessionConfig(
    provider="fake", model="fake-1", tools=(END_CALL, TRANSFER_CALL, SERVER), tool_timeout_s=10
)


def make() -> Session:
    session = Session("s1", CONFIG)
    session.receive(SessionUpdate(tools=(WEATHER,)), 0.0)
    session.effects()
    return session


def sent(effects: list[Effect]) -> list[ServerEvent]:
    return [e.event for e in effects if isinstance(e, Send)]


def start(session: Session, text: str, now: float = 0.0) -> str:
    session.receive(UserMessage(text), now)
    (gen,) = [e for e in session.effects() if isinstance(e, StartGeneration)]
    assert [t.name for t in gen.request.tools] == [
        "end_call",
        "transfer_call",
        "lookup_order",
        "get_weather",
    ]
    return gen.request.turn_id


def call(name: str, call_id: str = "", **args: object) -> FunctionCall:
    return FunctionCall(call_id, name, orjson.dumps(args).decode())


def test_a_client_call_keeps_the_turn_open_and_its_result_continues_the_same_turn() -> None:
    session = make()
    turn = start(session, "Weather in Paris?")
    session.provider_delta(turn, "Let me check", 1.0)
    session.provider_call(turn, call("get_weather", "c1", city="Paris"), 1.1)
    effects = session.effects()
    events = sent(effects)
    # The text before the call is spoken now, then the call goes to the client.
    assert isinstance(events[0], ResponseTts)
    assert events[0].text == "Let me check"
    fc = events[1]
    assert isinstance(fc, ResponseFunctionCall)
    assert (fc.turn_id, fc.call_id, fc.name, fc.arguments) == (
        turn,
        "c1",
        "get_weather",
        {"city": "Paris"},
    )
    assert WakeAt(11.1) in effects
    session.provider_done(turn, 1.2)
    assert not any(isinstance(e, ResponseEnd) for e in sent(session.effects()))
    assert session.streaming_turn_id == turn
    assert session.pending_calls == ("c1",)

    session.receive(FunctionResult("c1", '{"temp_c":21}'), 2.0)
    (gen,) = [e for e in session.effects() if isinstance(e, StartGeneration)]
    assert gen.request.turn_id == turn
    assert gen.request.messages[-2:] == (
        Message("assistant", "Let me check", calls=(call("get_weather", "c1", city="Paris"),)),
        Message("tool", '{"temp_c":21}', call_id="c1", name="get_weather"),
    )
    session.provider_delta(turn, "It is 21 degrees.", 2.5)
    session.provider_done(turn, 2.6)
    events = sent(session.effects())
    assert [e.type for e in events] == ["response.tts", "response.end"]
    tts, end = events
    assert isinstance(tts, ResponseTts)
    assert tts.index == 1
    assert isinstance(end, ResponseEnd)
    assert (end.status, end.text) == ("completed", "Let me checkIt is 21 degrees.")
    assert session.history[-1] == Message("assistant", "It is 21 degrees.")
    assert [m.role for m in session.history] == ["user", "assistant", "tool", "assistant"]


def test_parallel_calls_continue_once_every_result_is_in() -> None:
    session = make()
    turn = start(session, "Paris and Rome?")
    session.provider_call(turn, call("get_weather", "a", city="Paris"), 1)
    session.provider_call(turn, call("get_weather", "b", city="Rome"), 1)
    session.provider_done(turn, 1)
    session.effects()
    session.receive(FunctionResult("b", '"sunny"'), 2)
    assert not [e for e in session.effects() if isinstance(e, StartGeneration)]
    session.receive(FunctionResult("a", '"rain"'), 3)
    (gen,) = [e for e in session.effects() if isinstance(e, StartGeneration)]
    tools = [m for m in gen.request.messages if m.role == "tool"]
    assert [(m.call_id, m.text) for m in tools] == [("a", '"rain"'), ("b", '"sunny"')]


def test_a_result_before_the_stream_ends_waits_for_the_end() -> None:
    session = make()
    turn = start(session, "Paris?")
    session.provider_call(turn, call("get_weather", "c1", city="Paris"), 1)
    session.receive(FunctionResult("c1", "{}"), 1.5)
    assert not [e for e in session.effects() if isinstance(e, StartGeneration)]
    session.provider_done(turn, 2)
    assert [e for e in session.effects() if isinstance(e, StartGeneration)]


def test_a_call_never_answered_fails_the_turn_with_tool_timeout() -> None:
    session = make()
    turn = start(session, "Paris?")
    session.provider_call(turn, call("get_weather", "c1", city="Paris"), 1)
    session.provider_done(turn, 1)
    session.effects()
    session.tick(10.9)
    assert session.effects() == []
    session.tick(11.0)
    events = sent(session.effects())
    error, end = events
    assert isinstance(error, Error)
    assert error.code == ErrorCode.TOOL_TIMEOUT
    assert "get_weather" in error.message
    assert error.turn_id == turn
    assert isinstance(end, ResponseEnd)
    assert (end.status, end.reason) == ("failed", "tool_timeout")
    # The call stays in history with an error result, so the next request is well-formed.
    assert session.history[-1].role == "tool"
    assert "error" in session.history[-1].text
    session.receive(FunctionResult("c1", "{}"), 12)
    (late,) = sent(session.effects())
    assert isinstance(late, Error)
    assert late.code == ErrorCode.UNKNOWN_CALL


def test_an_unknown_or_answered_call_gets_an_error_and_nothing_else() -> None:
    session = make()
    session.receive(FunctionResult("nope", "{}"), 0)
    (error,) = sent(session.effects())
    assert isinstance(error, Error)
    assert error.code == ErrorCode.UNKNOWN_CALL
    turn = start(session, "Paris?")
    session.provider_call(turn, call("get_weather", "c1", city="Paris"), 1)
    session.receive(FunctionResult("c1", "{}"), 1)
    session.effects()
    session.receive(FunctionResult("c1", "{}"), 1)
    (again,) = sent(session.effects())
    assert isinstance(again, Error)
    assert again.code == ErrorCode.UNKNOWN_CALL
    assert session.streaming_turn_id == turn


def test_an_interrupt_with_a_pending_call_ends_the_turn_and_cancels_it() -> None:
    session = make()
    turn = start(session, "Paris?")
    session.provider_delta(turn, "Checking.", 1)
    session.provider_call(turn, call("get_weather", "c1", city="Paris"), 1)
    session.provider_done(turn, 1)
    session.effects()
    session.receive(Interrupt(), 2)
    effects = session.effects()
    (end,) = sent(effects)
    assert isinstance(end, ResponseEnd)
    assert end.status == "interrupted"
    assert CancelGeneration(turn) in effects
    assert session.pending_calls == ()
    assert [m.role for m in session.history] == ["user", "assistant", "tool"]
    assert session.history[1].text == "Checking."
    session.receive(FunctionResult("c1", "{}"), 3)
    (error,) = sent(session.effects())
    assert isinstance(error, Error)
    assert error.code == ErrorCode.UNKNOWN_CALL


def test_a_new_message_supersedes_a_turn_waiting_for_a_call() -> None:
    session = make()
    turn = start(session, "Paris?")
    session.provider_call(turn, call("get_weather", "c1", city="Paris"), 1)
    session.provider_done(turn, 1)
    session.effects()
    second = start(session, "Never mind.")
    assert second != turn
    assert session.pending_calls == ()
    assert session.history[-1] == Message("user", "Never mind.")


def test_server_tools_become_run_tool_and_their_results_continue() -> None:
    session = make()
    turn = start(session, "Where is my order?")
    order = call("lookup_order", "", id=7)
    session.provider_call(turn, order, 1)
    effects = session.effects()
    (run,) = [e for e in effects if isinstance(e, RunTool)]
    assert run.turn_id == turn
    assert run.call.name == "lookup_order"
    assert run.call.call_id
    assert not any(isinstance(e, ResponseFunctionCall) for e in sent(effects))
    session.provider_done(turn, 1)
    session.tool_finished(run.call.call_id, '{"status":"shipped"}', 2)
    assert [e for e in session.effects() if isinstance(e, StartGeneration)]
    # A late result for a finished turn is dropped silently.
    session.tool_finished("whatever", "{}", 3)
    assert session.effects() == []


def test_end_call_is_answered_at_once_and_ends_the_turn_after_the_goodbye() -> None:
    session = make()
    turn = start(session, "Bye!")
    session.provider_delta(turn, "Goodbye, have a nice day!", 1)
    session.provider_call(turn, call("end_call", "e1", reason="done"), 1.1)
    session.provider_done(turn, 1.2)
    events = sent(session.effects())
    assert [e.type for e in events] == ["response.tts", "response.call_control", "response.end"]
    control, end = events[1], events[2]
    assert isinstance(control, ResponseCallControl)
    assert (control.action, control.reason, control.turn_id) == ("end_call", "done", turn)
    assert isinstance(end, ResponseEnd)
    assert end.status == "completed"
    assert end.text == "Goodbye, have a nice day!"
    assert session.history[-2].calls[0].name == "end_call"
    assert session.history[-1] == Message("tool", '{"ok":true}', call_id="e1", name="end_call")


def test_a_transfer_carries_its_target() -> None:
    session = make()
    turn = start(session, "Transfer me")
    session.provider_call(turn, call("transfer_call", "t1"), 1)
    assert not any(isinstance(e, ResponseCallControl) for e in sent(session.effects()))
    session.provider_call(turn, call("transfer_call", "t2", to="+15550100"), 1)
    (control,) = [e for e in sent(session.effects()) if isinstance(e, ResponseCallControl)]
    assert (control.action, control.to) == ("transfer_call", "+15550100")


def test_error_results_go_back_to_the_model() -> None:
    session = make()
    turn = start(session, "Transfer me")
    session.provider_call(turn, call("transfer_call", "t1"), 1)
    session.provider_call(turn, call("no_such_tool", "t2"), 1)
    session.provider_done(turn, 1)
    (gen,) = [e for e in session.effects() if isinstance(e, StartGeneration)]
    results = {m.call_id: orjson.loads(m.text) for m in gen.request.messages if m.role == "tool"}
    assert "to" in results["t1"]["error"]
    assert "no_such_tool" in results["t2"]["error"]


def test_rounds_are_bounded() -> None:
    session = make()
    turn = start(session, "Loop")
    for n in range(MAX_TOOL_ROUNDS + 1):
        session.provider_call(turn, call("get_weather", f"c{n}", city="X"), n)
        session.provider_done(turn, n)
        session.receive(FunctionResult(f"c{n}", "{}"), n)
    end = [e for e in sent(session.effects()) if isinstance(e, ResponseEnd)]
    assert end[0].status == "failed"
    assert end[0].reason == "too_many_tool_rounds"


def test_declared_tools_survive_a_restart_with_calls_in_history() -> None:
    session = make()
    turn = start(session, "Paris?")
    session.provider_call(turn, call("get_weather", "c1", city="Paris"), 1)
    session.provider_done(turn, 1)
    session.receive(FunctionResult("c1", '{"t":1}'), 2)
    state = decode_state(encode_state(session.state()))
    assert state.client_tools == (WEATHER,)
    restored = Session.restore("s1", CONFIG, state, last_seq=session.seq, now=3)
    assert restored.tools[-1] == WEATHER
    assert restored.history[1].calls == (call("get_weather", "c1", city="Paris"),)


def test_session_update_declares_tools_and_says_their_names() -> None:
    session = Session("s1", CONFIG)
    session.receive(SessionUpdate(tools=(WEATHER,)), 0)
    (updated,) = sent(session.effects())
    assert isinstance(updated, SessionUpdated)
    assert updated.tools == ("get_weather",)
    session.receive(SessionUpdate(tools=(ToolSpec("end_call"),)), 0)
    (error,) = sent(session.effects())
    assert isinstance(error, Error)
    assert error.code == ErrorCode.INVALID_TOOL


def test_wire_decodes_tools_and_function_results() -> None:
    frame = orjson.dumps(
        {
            "type": "session.update",
            "tools": [{"name": "get_weather", "parameters": WEATHER.parameters}],
        }
    ).decode()
    event = wire.decode(frame, max_bytes=65536)
    assert isinstance(event, SessionUpdate)
    assert event.tools is not None
    assert event.tools[0].name == "get_weather"
    result = wire.decode(
        '{"type":"function.result","call_id":"c1","output":{"a":[1,2]}}', max_bytes=65536
    )
    assert result == FunctionResult("c1", '{"a":[1,2]}')


@pytest.mark.parametrize(
    ("tool", "words"),
    [
        ({"name": "bad name"}, ["tools[0]", "name"]),
        ({"name": "w", "parameters": {"type": "object", "properties": 3}}, ["'w'", "properties"]),
        ({"name": "w", "parameters": {"type": "strin"}}, ["'w'", "JSON Schema"]),
        ({"name": "w", "parameters": {"type": "string"}}, ["'w'", "object"]),
    ],
)
def test_a_bad_schema_is_a_clear_error_naming_the_tool(
    tool: dict[str, object], words: list[str]
) -> None:
    frame = orjson.dumps({"type": "session.update", "tools": [tool]}).decode()
    error = wire.decode(frame, max_bytes=65536)
    assert isinstance(error, WireError)
    assert error.code == ErrorCode.INVALID_TOOL
    for word in words:
        assert word in error.message


def test_check_tool_defaults_parameters_to_an_empty_object() -> None:
    assert check_tool("f", None, None).parameters == {"type": "object", "properties": {}}
    with pytest.raises(ToolError, match="must be a string"):
        check_tool("f", 3, None)
    frame = orjson.dumps({"type": "session.update", "tools": [{"name": "f"}, {"name": "f"}]})
    error = wire.decode(frame.decode(), max_bytes=65536)
    assert isinstance(error, WireError)
    assert "twice" in error.message


def test_a_refused_call_control_goes_back_to_the_model() -> None:
    session = make()
    turn = start(session, "Transfer me")
    session.provider_delta(turn, "One moment.", 1)
    session.provider_call(turn, call("transfer_call", "t1"), 1)
    session.provider_done(turn, 1)
    effects = session.effects()
    assert not any(isinstance(e, ResponseEnd) for e in sent(effects))
    (gen,) = [e for e in effects if isinstance(e, StartGeneration)]
    assert "error" in gen.request.messages[-1].text


def test_template_variables_fill_the_instructions() -> None:
    config = SessionConfig(provider="f", model="m", system_instruction="Hi {{name}}, {{ tier }}.")
    session = Session("s1", config)
    frame = '{"type":"session.update","variables":{"name":"Ada","tier":3}}'
    event = wire.decode(frame, max_bytes=65536)
    assert isinstance(event, SessionUpdate)
    session.receive(event, 0)
    session.receive(UserMessage("hello"), 0)
    (gen,) = [e for e in session.effects() if isinstance(e, StartGeneration)]
    assert gen.request.system_instruction == "Hi Ada, 3."
    restored = Session.restore("s1", config, session.state(), last_seq=session.seq, now=1)
    restored.receive(UserMessage("again"), 1)
    (gen,) = [e for e in restored.effects() if isinstance(e, StartGeneration)]
    assert gen.request.system_instruction == "Hi Ada, 3."


def test_a_platform_tool_named_like_a_server_tool_is_not_declared_twice() -> None:
    session = Session("s1", CONFIG)
    session.receive(
        TranscriptTurn((Message("user", "hi"),), tools=(ToolSpec("lookup_order"), WEATHER)), 0
    )
    (gen,) = [e for e in session.effects() if isinstance(e, StartGeneration)]
    names = [t.name for t in gen.request.tools]
    assert names == ["end_call", "transfer_call", "lookup_order", "get_weather"]
    assert gen.request.tools[2].executor == "server"
