"""The bounded context: the cut by running sums matches the message-by-message rule,
and a session's history is measured only where it grew."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import context
from gateway.core.context import ContextBudget, HistoryMeasure, estimate_tokens, fit_history
from gateway.core.history import FunctionCall, Message


def reference_fit(messages: Sequence[Message], budget: ContextBudget) -> tuple[Message, ...]:
    """The rule, one message at a time from the newest: keep while within the budget,
    cut before the oldest user message kept; the last exchange always goes."""
    count = len(messages)
    if budget.max_tokens is None and budget.max_messages is None:
        return tuple(messages)
    start, used = count, 0
    for index in range(count - 1, -1, -1):
        used += estimate_tokens(messages[index])
        if (budget.max_tokens is not None and used > budget.max_tokens) or (
            budget.max_messages is not None and count - index > budget.max_messages
        ):
            break
        if messages[index].role == "user":
            start = index
    else:
        return tuple(messages)
    if start == count:
        start = next((i for i in range(count - 1, -1, -1) if messages[i].role == "user"), 0)
    return tuple(messages[start:])


calls = st.lists(
    st.builds(
        FunctionCall,
        call_id=st.just("c1"),
        name=st.text(max_size=8),
        arguments=st.text(max_size=30),
    ),
    max_size=2,
).map(tuple)
messages = st.one_of(
    st.builds(Message, role=st.just("user"), text=st.text(max_size=60)),
    st.builds(Message, role=st.just("assistant"), text=st.text(max_size=60), calls=calls),
    st.builds(Message, role=st.just("tool"), text=st.text(max_size=20), call_id=st.just("c1")),
)
budgets = st.builds(
    ContextBudget,
    max_tokens=st.none() | st.integers(0, 200),
    max_messages=st.none() | st.integers(0, 12),
)


@settings(max_examples=400)
@given(history=st.lists(messages, max_size=30).map(tuple), budget=budgets)
def test_the_cut_by_running_sums_is_the_cut_message_by_message(
    history: tuple[Message, ...], budget: ContextBudget
) -> None:
    expected = reference_fit(history, budget)
    assert fit_history(history, budget) == expected
    costs = [estimate_tokens(m) for m in history]
    assert fit_history(history, budget, costs) == expected
    assert HistoryMeasure().fit(history, budget) == expected


@settings(max_examples=200)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["append", "edit", "cut"]), st.lists(messages, max_size=4)),
        max_size=12,
    ),
    budget=budgets,
)
def test_a_measure_kept_across_turns_agrees_with_a_fresh_one(
    steps: list[tuple[str, list[Message]]], budget: ContextBudget
) -> None:
    measure = HistoryMeasure()
    history: tuple[Message, ...] = ()
    for step, added in steps:
        if step == "append":
            history = (*history, *added)
        elif step == "edit" and history:
            history = (Message("user", "edited"), *history[1:])
        elif step == "cut":
            history = history[len(history) // 2 :]
        assert measure.chars(history) == sum(len(m.text) for m in history)
        assert measure.fit(history, budget) == reference_fit(history, budget)


def test_a_grown_history_is_measured_only_where_it_grew(monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[Message] = []

    def counting(message: Message) -> int:
        measured.append(message)
        return estimate_tokens(message)

    monkeypatch.setattr(context, "estimate_tokens", counting)
    measure = HistoryMeasure()
    history = tuple(Message("user" if i % 2 else "assistant", f"m{i}") for i in range(100))
    budget = ContextBudget(max_tokens=1000, max_messages=20)
    measure.fit(history, budget)
    assert len(measured) == 100
    measured.clear()
    grown = (*history, Message("user", "one more"))
    assert measure.fit(grown, budget) == reference_fit(grown, budget)
    assert measure.chars(grown) == sum(len(m.text) for m in grown)
    assert measured == [grown[-1]]
