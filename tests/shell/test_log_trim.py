"""The stored event log is trimmed to about the replay log's length, and only when it
has outgrown it: a session shorter than its replay log never pays for a trim."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.faults import FaultyFactory, faulty_gateways


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[FaultyFactory]:
    with faulty_gateways(tmp_path) as start:
        yield start


def stored_events(db: Path, session_id: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM events WHERE session_id = ?", (session_id,)
        ).fetchone()
    return int(count)


async def play(gateway_url: str, turns: int) -> str:
    async with await Client.connect(f"{gateway_url}/ws") as client:
        ready = await client.ready()
        for i in range(turns):
            await client.send(f"Message {i}")
            await client.turn()
    return str(ready["session_id"])


async def test_a_session_within_its_replay_log_is_never_trimmed(
    gateways: FaultyFactory,
) -> None:
    gateway = gateways(GATEWAY_OFFLINE_DELAY_MS=0)
    sid = await play(gateway.ws_url, 6)
    assert gateway.store.calls["trim_events"] == 0
    assert stored_events(gateway.db_path, sid) > 6  # every event of the 6 turns is kept


async def test_a_session_past_its_replay_log_is_trimmed_back_to_it(
    gateways: FaultyFactory,
) -> None:
    gateway = gateways(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_REPLAY_EVENTS=16)
    sid = await play(gateway.ws_url, 10)
    assert gateway.store.calls["trim_events"] >= 2
    # Trimmed at the last turn's end at the latest (at most an eighth more than 16).
    assert 16 <= stored_events(gateway.db_path, sid) <= 16 + 2
