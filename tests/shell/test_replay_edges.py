"""Replay at the edges of the replay log with the smallest send queue: a client
N−1 or N events behind (N = ``GATEWAY_REPLAY_EVENTS`` = 16) gets exactly what it
missed, one N+1 behind gets ``session.resync``, and a replay longer than the send
queue (12 events, queue 8) is served whole: from a live runtime and from the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.faults import (
    FaultyFactory,
    FaultyProvider,
    faulty_gateways,
    resume_url,
    session_events,
    wait_until,
)

REPLAY = 16
QUEUE = 8


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[FaultyFactory]:
    with faulty_gateways(tmp_path) as start:
        yield start


@pytest.mark.parametrize("runtime", ["live", "restored"])
@pytest.mark.parametrize("behind", [12, REPLAY - 1, REPLAY, REPLAY + 1])
async def test_a_resume_behind_by_gets_exactly_what_it_missed(
    gateways: FaultyFactory, behind: int, runtime: str
) -> None:
    gateway = gateways(
        provider=FaultyProvider(),
        GATEWAY_SEND_QUEUE=QUEUE,
        GATEWAY_REPLAY_EVENTS=REPLAY,
        GATEWAY_RESUME_GRACE_S=30 if runtime == "live" else 0,
    )
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        ready = await client.ready()
        for i in range(4):
            await client.send({"type": "user.message", "text": f"Message {i}", "id": f"u{i}"})
            await client.turn()
    sent = session_events(client.received)
    newest = sent[-1]["seq"]
    assert newest > REPLAY + 1
    sid = ready["session_id"]
    if runtime == "restored":
        await wait_until(lambda: gateway.live_runtime(sid) is None)
    else:
        assert gateway.live_runtime(sid) is not None

    last_seq = newest - behind
    async with await Client.connect(resume_url(gateway.ws_url, ready, last_seq)) as again:
        resumed = await again.ready()
        # Sent at once: the replay comes first, then this message's turn.
        await again.send({"type": "user.message", "text": "Still here?", "id": "u-next"})
        rest = await again.recv_until(
            lambda e: e["type"] == "response.end" and e.get("turn_id") == "t5"
        )
    (start,) = [
        i for i, e in enumerate(rest) if e["type"] == "response.start" and e["turn_id"] == "t5"
    ]
    before, nxt = rest[:start], rest[start:]

    assert (resumed["resumed"], resumed["seq"]) == (True, last_seq)
    if behind <= REPLAY:
        assert before == sent[-behind:], "the replay is not exactly the missed events"
    else:
        (resync,) = before
        assert resync["type"] == "session.resync"
        assert resync["seq"] == newest
        assert [m["role"] for m in resync["transcript"]] == ["user", "assistant"] * 4
    # Nothing else came in between: the live turn continues right after.
    assert nxt[0]["type"] == "response.start"
    assert nxt[0]["seq"] == newest + 1
    assert nxt[-1]["status"] == "completed"
