"""The SessionStore contract: every test runs against every backend (see conftest)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.stores.base import SessionStore, StoredEvent, StoredSession, StoreError
from tests.stores.helpers import event, events, meta, turn

STATE = bytes(range(256)) + b"\x00\xff tail"  # not UTF-8, with NULs


async def test_create_get_round_trip(store: SessionStore) -> None:
    m = meta("s", created_at=1700000000.25, updated_at=1700000001.5)
    await store.create(m, STATE)

    assert await store.get("s") == StoredSession(meta=m, state=STATE)


async def test_empty_state_round_trips(store: SessionStore) -> None:
    await store.create(meta("s"), b"")

    got = await store.get("s")
    assert got is not None
    assert got.state == b""


async def test_principal_may_be_none(store: SessionStore) -> None:
    await store.create(replace(meta("s"), principal=None), b"x")

    got = await store.get("s")
    assert got is not None
    assert got.meta.principal is None


async def test_duplicate_create_raises_and_keeps_the_first(store: SessionStore) -> None:
    await store.create(meta("s"), b"first")

    with pytest.raises(StoreError, match="exists"):
        await store.create(meta("s", created_at=2000.0), b"second")

    got = await store.get("s")
    assert got is not None
    assert got.state == b"first"
    assert got.meta.created_at == 1000.0


async def test_get_unknown_is_none(store: SessionStore) -> None:
    assert await store.get("nope") is None


async def test_commit_appends_events_in_order(store: SessionStore) -> None:
    await store.create(meta("s"), b"")
    await store.commit("s", events=events(1, 3))
    await store.commit("s", events=events(4, 4))
    await store.commit("s", events=events(5, 9))

    assert await store.read_events("s", 0) == events(1, 9)


async def test_read_events_after_seq_and_limit(store: SessionStore) -> None:
    await store.create(meta("s"), b"")
    await store.commit("s", events=events(1, 10))

    assert await store.read_events("s", 4) == events(5, 10)
    assert await store.read_events("s", 4, limit=3) == events(5, 7)
    assert await store.read_events("s", 4, limit=100) == events(5, 10)
    assert await store.read_events("s", 4, limit=0) == []
    assert await store.read_events("s", 9) == events(10, 10)
    assert await store.read_events("s", 10) == []
    assert await store.read_events("s", 50) == []
    assert await store.read_events("s", -5) == events(1, 10)
    assert await store.read_events("nope", 0) == []


async def test_event_fields_round_trip(store: SessionStore) -> None:
    await store.create(meta("s"), b"")
    batch = [
        StoredEvent(seq=1, type="session.ready", turn_id=None, data='{"a": "é ✓ \\u0000"}'),
        StoredEvent(seq=2, type="response.start", turn_id="turn-1", data="{}"),
    ]
    await store.commit("s", events=batch)

    assert await store.read_events("s", 0) == batch


async def test_first_seq(store: SessionStore) -> None:
    await store.create(meta("s"), b"")
    assert await store.first_seq("s") is None
    assert await store.first_seq("nope") is None

    await store.commit("s", events=events(1, 5))

    assert await store.first_seq("s") == 1


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([4, 5], id="gap-before"),
        pytest.param([3, 5], id="gap-inside"),
        pytest.param([3, 3], id="repeated-in-batch"),
        pytest.param([2, 3], id="repeats-committed"),
        pytest.param([0], id="zero"),
        pytest.param([4, 3], id="backwards"),
    ],
)
async def test_commit_rejects_a_broken_seq_and_writes_nothing(
    store: SessionStore, bad: list[int]
) -> None:
    await store.create(meta("s"), b"before")
    await store.commit("s", events=events(1, 2), turns=[turn("t1")], updated_at=1100.0)

    with pytest.raises(StoreError, match="seq"):
        await store.commit(
            "s",
            events=[event(seq) for seq in bad],
            turns=[turn("t1", status="completed", text="done"), turn("t2", started_at=1001.0)],
            state=b"after",
            updated_at=1200.0,
        )

    got = await store.get("s")
    assert got is not None
    assert got.state == b"before"
    assert got.meta.updated_at == 1100.0
    assert await store.read_events("s", 0) == events(1, 2)
    assert await store.list_turns("s") == [turn("t1")]
    # The log is still usable from where it was.
    await store.commit("s", events=events(3, 3))
    assert await store.read_events("s", 0) == events(1, 3)


async def test_first_batch_starts_at_one(store: SessionStore) -> None:
    await store.create(meta("s"), b"")

    with pytest.raises(StoreError):
        await store.commit("s", events=events(2, 3))

    assert await store.first_seq("s") is None


async def test_commit_rejects_a_turn_of_another_session(store: SessionStore) -> None:
    await store.create(meta("a"), b"a")
    await store.create(meta("b"), b"b")

    with pytest.raises(StoreError):
        await store.commit(
            "a", events=events(1, 1), turns=[turn("t1", session_id="b")], state=b"changed"
        )

    assert await store.list_turns("a") == []
    assert await store.list_turns("b") == []
    assert await store.read_events("a", 0) == []
    got = await store.get("a")
    assert got is not None
    assert got.state == b"a"


async def test_turn_upsert_and_order(store: SessionStore) -> None:
    await store.create(meta("s"), b"")
    streaming = turn("t1", started_at=1010.0)
    await store.commit("s", turns=[streaming])
    assert await store.list_turns("s") == [streaming]

    completed = turn("t1", started_at=1010.0, status="completed", text="Hello there.")
    later = turn("t2", started_at=1020.0)
    await store.commit("s", turns=[completed, later])
    assert await store.list_turns("s") == [completed, later]

    # An older turn committed last still lists first; equal starts keep insertion order.
    earlier = turn("t0", started_at=1000.0, status="interrupted", text="Hel")
    tie = turn("t3", started_at=1020.0)
    await store.commit("s", turns=[tie, earlier])
    assert await store.list_turns("s") == [earlier, completed, later, tie]
    assert await store.list_turns("nope") == []


async def test_state_replacement_and_updated_at(store: SessionStore) -> None:
    await store.create(meta("s", created_at=1000.0), b"v1")

    await store.commit("s", state=b"v2" * 5000, updated_at=1050.5)
    got = await store.get("s")
    assert got is not None
    assert got.state == b"v2" * 5000
    assert got.meta.updated_at == 1050.5
    assert got.meta.created_at == 1000.0

    # Neither given: both kept; events alone do not touch them.
    await store.commit("s", events=events(1, 1))
    got = await store.get("s")
    assert got is not None
    assert got.state == b"v2" * 5000
    assert got.meta.updated_at == 1050.5

    await store.commit("s", updated_at=1060.0)
    got = await store.get("s")
    assert got is not None
    assert (got.state, got.meta.updated_at) == (b"v2" * 5000, 1060.0)

    await store.commit("s", state=b"v3")
    got = await store.get("s")
    assert got is not None
    assert (got.state, got.meta.updated_at) == (b"v3", 1060.0)


async def test_commit_applies_everything_together(store: SessionStore) -> None:
    await store.create(meta("s"), b"")
    await store.commit(
        "s",
        events=events(1, 3),
        turns=[turn("t1", status="completed")],
        state=b"state",
        updated_at=1234.0,
    )

    got = await store.get("s")
    assert got is not None
    assert (got.state, got.meta.updated_at) == (b"state", 1234.0)
    assert await store.read_events("s", 0) == events(1, 3)
    assert await store.list_turns("s") == [turn("t1", status="completed")]


async def test_trim_events_keeps_the_newest(store: SessionStore) -> None:
    await store.create(meta("s"), b"")
    await store.commit("s", events=events(1, 10))

    await store.trim_events("s", 4)
    assert await store.first_seq("s") == 7
    assert await store.read_events("s", 0) == events(7, 10)
    assert await store.read_events("s", 8) == events(9, 10)

    await store.trim_events("s", 100)  # more than held: nothing changes
    assert await store.read_events("s", 0) == events(7, 10)

    # The log continues from the last seq, not from what is left.
    await store.commit("s", events=events(11, 12))
    assert await store.read_events("s", 0) == events(7, 12)

    await store.trim_events("s", 0)
    assert await store.first_seq("s") is None
    assert await store.read_events("s", 0) == []
    with pytest.raises(StoreError):
        await store.commit("s", events=events(1, 1))
    await store.commit("s", events=events(13, 13))
    assert await store.read_events("s", 0) == events(13, 13)

    await store.trim_events("nope", 1)  # unknown: nothing to do
    with pytest.raises(ValueError, match="keep_last"):
        await store.trim_events("s", -1)


async def test_list_sessions_newest_first_with_cursor(store: SessionStore) -> None:
    # Ten sessions over four creation times, with ties broken by id (descending).
    created = {
        "a": 1.0, "b": 3.0, "c": 3.0, "d": 2.0, "e": 3.0,
        "f": 4.0, "g": 1.0, "h": 2.0, "i": 4.0, "j": 3.0,
    }  # fmt: skip
    for sid, at in created.items():
        await store.create(meta(sid, created_at=at), b"")
    expected = sorted(created, key=lambda sid: (created[sid], sid), reverse=True)
    assert expected[:4] == ["i", "f", "j", "e"]

    pages: list[list[str]] = []
    before: tuple[float, str] | None = None
    while True:
        page = await store.list_sessions(limit=3, before=before)
        if not page:
            break
        assert len(page) <= 3
        pages.append([m.session_id for m in page])
        before = (page[-1].created_at, page[-1].session_id)

    assert len(pages) == 4
    assert [sid for page in pages for sid in page] == expected
    first = await store.list_sessions(limit=3)
    assert first[0] == meta("i", created_at=4.0)


async def test_list_sessions_limits_and_cursor_edges(store: SessionStore) -> None:
    for sid in "abc":
        await store.create(meta(sid, created_at=5.0), b"")

    assert await store.list_sessions(limit=0) == []
    assert [m.session_id for m in await store.list_sessions(limit=10)] == ["c", "b", "a"]
    # A cursor naming no session still splits by (created_at, id).
    assert [m.session_id for m in await store.list_sessions(limit=10, before=(5.0, "bb"))] == [
        "b",
        "a",
    ]
    assert await store.list_sessions(limit=10, before=(5.0, "a")) == []
    assert len(await store.list_sessions(limit=10, before=(5.5, ""))) == 3


async def test_list_sessions_empty(store: SessionStore) -> None:
    assert await store.list_sessions(limit=10) == []


async def test_delete_cascades(store: SessionStore) -> None:
    await store.create(meta("s"), b"state")
    await store.commit("s", events=events(1, 5), turns=[turn("t1"), turn("t2")])

    assert await store.delete("s") is True

    assert await store.get("s") is None
    assert await store.read_events("s", 0) == []
    assert await store.first_seq("s") is None
    assert await store.list_turns("s") == []
    assert await store.list_sessions(limit=10) == []
    assert await store.delete("s") is False
    # The id is free again and starts from nothing.
    await store.create(meta("s"), b"new")
    assert await store.read_events("s", 0) == []
    assert await store.list_turns("s") == []
    await store.commit("s", events=events(1, 1))
    assert await store.read_events("s", 0) == events(1, 1)


async def test_delete_unknown_is_false(store: SessionStore) -> None:
    assert await store.delete("nope") is False


async def test_expire_deletes_only_idle_sessions(store: SessionStore) -> None:
    await store.create(meta("old", updated_at=100.0), b"")
    await store.create(meta("older", updated_at=50.0), b"")
    await store.create(meta("edge", updated_at=200.0), b"")
    await store.create(meta("fresh", updated_at=300.0), b"")
    await store.create(meta("touched", updated_at=10.0), b"")
    await store.commit("old", events=events(1, 2), turns=[turn("t1", session_id="old")])
    await store.commit("touched", updated_at=250.0)

    expired = await store.expire(200.0)

    assert sorted(expired) == ["old", "older"]
    assert await store.get("old") is None
    assert await store.read_events("old", 0) == []
    assert await store.list_turns("old") == []
    remaining = {m.session_id for m in await store.list_sessions(limit=10)}
    assert remaining == {"edge", "fresh", "touched"}
    assert await store.expire(200.0) == []


async def test_commit_for_unknown_session_is_a_no_op(store: SessionStore) -> None:
    await store.commit(
        "ghost",
        events=events(1, 2, session_id="ghost"),
        turns=[turn("t1", session_id="ghost")],
        state=b"x",
        updated_at=1.0,
    )
    # Even a batch that would be invalid: there is nothing to apply it to.
    await store.commit("ghost", events=events(7, 7, session_id="ghost"))

    assert await store.get("ghost") is None
    assert await store.read_events("ghost", 0) == []
    assert await store.list_turns("ghost") == []
    assert await store.list_sessions(limit=10) == []


async def test_ping(store: SessionStore) -> None:
    await store.ping()


async def test_closed_store_raises_store_error(store: SessionStore) -> None:
    await store.create(meta("s"), b"")
    await store.aclose()
    await store.aclose()  # idempotent

    with pytest.raises(StoreError):
        await store.ping()
    with pytest.raises(StoreError):
        await store.get("s")
    with pytest.raises(StoreError):
        await store.commit("s", events=events(1, 1))


async def test_sessions_are_isolated(store: SessionStore) -> None:
    await store.create(meta("a", created_at=1.0), b"state-a")
    await store.create(meta("b", created_at=2.0), b"state-b")
    await store.commit(
        "a",
        events=events(1, 3, session_id="a"),
        turns=[turn("ta", session_id="a")],
        state=b"state-a2",
        updated_at=10.0,
    )
    await store.commit("b", events=events(1, 2, session_id="b"), turns=[turn("tb", session_id="b")])
    # Same turn id in both sessions: two different turns.
    await store.commit("b", turns=[turn("ta", session_id="b", started_at=2000.0)])

    assert await store.read_events("a", 0) == events(1, 3, session_id="a")
    assert await store.read_events("b", 0) == events(1, 2, session_id="b")
    assert await store.list_turns("a") == [turn("ta", session_id="a")]
    assert await store.list_turns("b") == [
        turn("tb", session_id="b"),
        turn("ta", session_id="b", started_at=2000.0),
    ]
    got_b = await store.get("b")
    assert got_b is not None
    assert (got_b.state, got_b.meta.updated_at) == (b"state-b", 2.0)

    await store.trim_events("a", 0)
    assert await store.read_events("b", 0) == events(1, 2, session_id="b")
    await store.delete("a")
    assert await store.read_events("b", 0) == events(1, 2, session_id="b")
    assert len(await store.list_turns("b")) == 2
    got_b = await store.get("b")
    assert got_b is not None
    assert got_b.state == b"state-b"


async def test_list_sessions_of_one_principal(store: SessionStore) -> None:
    for i, owner in enumerate(["alice", "bob", "alice", "alice", None]):
        await store.create(replace(meta(f"s{i}", created_at=1000.0 + i), principal=owner), b"")
    alice = await store.list_sessions(limit=10, principal="alice")
    assert [m.session_id for m in alice] == ["s3", "s2", "s0"]
    page = await store.list_sessions(limit=1, principal="alice", before=(1003.0, "s3"))
    assert [m.session_id for m in page] == ["s2"]
    assert [m.session_id for m in await store.list_sessions(limit=10, principal="bob")] == ["s1"]
    assert len(await store.list_sessions(limit=10)) == 5


async def test_streaming_sessions_are_those_with_an_open_turn(store: SessionStore) -> None:
    for sid in ("open", "done", "idle", "gone"):
        await store.create(meta(sid), b"")
    await store.commit("open", turns=[turn("t1", session_id="open", status="completed")])
    await store.commit("open", turns=[turn("t2", session_id="open", started_at=1001.0)])
    await store.commit("done", turns=[turn("t1", session_id="done")])
    await store.commit("done", turns=[turn("t1", session_id="done", status="interrupted")])
    await store.commit("gone", turns=[turn("t1", session_id="gone")])
    await store.delete("gone")

    assert sorted(await store.streaming_sessions()) == ["open"]
