"""A session's ``updated_at`` goes with a commit at most every ``touch_every_s``: the
time is an index entry to rewrite, a page write of its own per commit, and what
reads it (expiry, the API's listing) needs it to the second, not to the chunk."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.records import TurnRecord
from gateway.pipeline import Pipeline, StorePolicy
from gateway.stores.base import StoredEvent
from gateway.stores.memory import MemoryStore
from tests.stores.helpers import meta


class RecordingStore(MemoryStore):
    """A memory store that notes the ``updated_at`` of every commit."""

    def __init__(self) -> None:
        super().__init__()
        self.touches: list[float | None] = []

    async def commit(
        self,
        session_id: str,
        *,
        events: Sequence[StoredEvent] = (),
        turns: Sequence[TurnRecord] = (),
        state: bytes | None = None,
        updated_at: float | None = None,
    ) -> None:
        self.touches.append(updated_at)
        await super().commit(
            session_id, events=events, turns=turns, state=state, updated_at=updated_at
        )


async def test_updated_at_goes_with_a_commit_at_most_every_touch_interval() -> None:
    store = RecordingStore()
    await store.create(meta("s", created_at=1.0), b"")
    now = [100.0]
    pipeline = Pipeline(
        "s",
        store,
        snapshot=lambda: b"state",
        dispatch=lambda item: None,
        wake=lambda: None,
        clock=lambda: now[0],
        trim_to=100,
        policy=StorePolicy(touch_every_s=5.0),
    )
    for at in (100.0, 102.0, 104.9, 105.0, 106.0, 111.0):
        now[0] = at
        pipeline.mark_state()
        await pipeline.run()

    assert store.touches == [100.0, None, None, 105.0, None, 111.0]
    got = await store.get("s")
    assert got is not None
    assert (got.state, got.meta.updated_at) == (b"state", 111.0)
