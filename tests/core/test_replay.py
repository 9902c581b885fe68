"""The bounded replay log."""

from __future__ import annotations

import gc

import pytest

from gateway.core.replay import LoggedEvent, ReplayLog


def pong(seq: int) -> LoggedEvent:
    return LoggedEvent(seq, "pong", None, f'{{"type":"pong","seq":{seq}}}')


def test_since_returns_events_after_seq_in_order() -> None:
    log = ReplayLog(10, [pong(i) for i in range(1, 6)])
    assert [e.seq for e in log.since(2) or []] == [3, 4, 5]
    assert log.since(5) == []
    assert log.since(9) == []


def test_since_says_none_when_events_were_dropped() -> None:
    log = ReplayLog(3)
    for i in range(1, 7):
        log.append(pong(i))
    assert (log.first_seq, log.last_seq, len(log)) == (4, 6, 3)
    assert log.since(2) is None
    assert [e.seq for e in log.since(3) or []] == [4, 5, 6]


def test_append_refuses_a_gap() -> None:
    log = ReplayLog(3, [pong(1)])
    with pytest.raises(ValueError, match="does not follow"):
        log.append(pong(3))


def test_tail() -> None:
    log = ReplayLog(5, [pong(i) for i in range(1, 5)])
    assert [e.seq for e in log.tail(2)] == [3, 4]
    assert log.tail(0) == []


def test_since_upto_stops_at_a_seq() -> None:
    log = ReplayLog(10, [pong(i) for i in range(1, 8)])
    assert [e.seq for e in log.since(2, upto=5) or []] == [3, 4, 5]
    assert log.since(5, upto=5) == []


def big(seq: int, size: int) -> LoggedEvent:
    return LoggedEvent(seq, "session.updated", None, "x" * size)


def test_the_log_holds_no_more_than_max_chars_of_json() -> None:
    """1024 long ``session.updated`` events once held 66 MB in one session."""
    log = ReplayLog(1024, max_chars=10_000)
    for i in range(1, 101):
        log.append(big(i, 3_000))
    assert (len(log), log.first_seq, log.last_seq) == (3, 98, 100)
    assert log.chars == 9_000
    assert log.since(96) is None  # a resume from there gets a resync
    log.append(big(101, 50_000))  # larger than the budget: only it stays
    assert (len(log), log.first_seq, log.chars) == (1, 101, 50_000)
    restored = ReplayLog(1024, [big(i, 3_000) for i in range(1, 11)], max_chars=10_000)
    assert restored.first_seq == 8


def test_the_logged_events_are_not_walked_by_the_cyclic_collector() -> None:
    """A full collection pauses every session's event loop for each object it tracks:
    the log's events must not be such objects (it made them untracked tuples)."""
    log = ReplayLog(capacity=2000)
    gc.collect()
    before = len(gc.get_objects())
    for seq in range(1, 1001):
        log.append(LoggedEvent(seq, "response.chunk", f"t{seq}", f'{{"seq":{seq}}}'))
    gc.collect()
    assert len(gc.get_objects()) - before < 50
    assert [e.seq for e in log.since(998) or []] == [999, 1000]
    assert log.tail(1) == [LoggedEvent(1000, "response.chunk", "t1000", '{"seq":1000}')]
