"""StateEncoder: the same bytes as encode_state, snapshot after snapshot."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.history import FunctionCall, Message
from gateway.core.state import (
    STATE_VERSION,
    SessionState,
    StateEncoder,
    decode_state,
    encode_state,
)

BASE = SessionState(
    version=STATE_VERSION,
    language="en",
    instructions='Say "history":[] aloud, then {"history":[1]}.',
    history=(),
    seq=0,
    turns=0,
    messages=0,
    seen_ids=(),
    open_turn=None,
    last_reply=None,
    client_acks=False,
)

texts = st.text(max_size=40)
messages = st.one_of(
    st.builds(Message, st.sampled_from(["user", "assistant"]), texts),
    st.builds(
        lambda text, name: Message(
            "assistant", text, calls=(FunctionCall("call_1", name, '{"a": "]"}'),)
        ),
        texts,
        st.text(min_size=1, max_size=10),
    ),
)
#: What happens to the history between two snapshots.
steps = st.one_of(
    st.tuples(st.just("append"), st.lists(messages, max_size=3)),
    st.tuples(st.just("edit"), messages),  # the last message replaced (an interrupt)
    st.tuples(st.just("cut"), st.integers(min_value=0, max_value=5)),  # oldest dropped
    st.tuples(st.just("same"), st.none()),
)


@given(st.lists(steps, max_size=12))
def test_every_snapshot_is_encode_states_bytes(plan: list[tuple[str, object]]) -> None:
    encode = StateEncoder()
    history: tuple[Message, ...] = ()
    for seq, (step, arg) in enumerate(plan):
        if step == "append":
            assert isinstance(arg, list)
            history = (*history, *arg)
        elif step == "edit" and history:
            assert isinstance(arg, Message)
            history = (*history[:-1], arg)
        elif step == "cut":
            assert isinstance(arg, int)
            history = history[arg:]
        state = replace(BASE, history=history, seq=seq)
        encoded = encode(state)
        assert encoded == encode_state(state)
        assert decode_state(encoded) == state


def test_an_unchanged_history_is_not_encoded_again() -> None:
    encode = StateEncoder()
    history = tuple(Message("user", f"message {i}") for i in range(3))
    encode(replace(BASE, history=history))
    buffer, kept = encode._encoded, bytes(encode._encoded)
    encode(replace(BASE, history=history, seq=9))
    assert encode._encoded is buffer
    assert encode._encoded == kept
    longer = (*history, Message("assistant", "more"))
    assert encode(replace(BASE, history=longer)) == encode_state(replace(BASE, history=longer))
    # Grown in place: the messages kept were not encoded again.
    assert encode._encoded is buffer
    assert encode._encoded.startswith(kept)


def test_a_message_that_cannot_be_encoded_leaves_the_encoder_as_it_was() -> None:
    encode = StateEncoder()
    history = (Message("user", "a"),)
    encode(replace(BASE, history=history))
    bad = (*history, Message("user", "b"), Message("assistant", "\ud800"))  # a lone surrogate
    with pytest.raises(orjson.JSONEncodeError):
        encode(replace(BASE, history=bad))
    good = (*history, Message("user", "b"))
    assert encode(replace(BASE, history=good)) == encode_state(replace(BASE, history=good))
