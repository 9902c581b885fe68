"""An ended session is over: ``live: false`` at once, and a resume is refused
with 4410, before and after a gateway restart on the same SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.client import Client
from tests.support.faults import (
    FaultyFactory,
    FaultyProvider,
    faulty_gateways,
    resume_url,
    session_events,
)


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[FaultyFactory]:
    with faulty_gateways(tmp_path) as start:
        yield start


async def summary(http_url: str, session_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``GET /sessions/{id}`` and the session's row in ``GET /sessions``."""
    async with httpx.AsyncClient(base_url=http_url) as http:
        one = await http.get(f"/sessions/{session_id}")
        page = await http.get("/sessions", params={"limit": 100})
    assert one.status_code == 200
    (row,) = [s for s in page.json()["sessions"] if s["session_id"] == session_id]
    return one.json(), row


async def refused(ws_url: str, ready: dict[str, Any], last_seq: int) -> tuple[int | None, list]:
    client = await Client.connect(resume_url(ws_url, ready, last_seq))
    return await client.close_code(), client.received


async def test_an_ended_session_is_not_live_and_cannot_be_resumed_even_after_a_restart(
    gateways: FaultyFactory,
) -> None:
    provider = FaultyProvider()
    gateway = gateways(provider=provider)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        ready = await client.ready()
        await client.send({"type": "user.message", "text": "Hello", "id": "u1"})
        await client.turn()
        await client.send({"type": "user.message", "text": "[hang] go on", "id": "u2"})
        await client.recv_type("response.start")
        await client.send({"type": "session.end"})
        tail = await client.recv_type("session.ended")
        code = await client.close_code()
    assert code == 1000
    assert [(e["type"], e.get("status")) for e in tail] == [
        ("response.end", "interrupted"),
        ("session.ended", None),
    ]
    last = session_events(client.received)[-1]["seq"]
    sid = ready["session_id"]

    one, row = await summary(gateway.http_url, sid)  # at once: no waiting
    assert (one["live"], row["live"]) == (False, False)
    assert [t["status"] for t in one["turns"]] == ["completed", "interrupted"]
    assert gateway.live_runtime(sid) is None
    for last_seq in (last, 0):
        assert await refused(gateway.ws_url, ready, last_seq) == (4410, [])
    assert provider.cut >= 1, "the hung provider stream was not closed"

    gateway.stop()
    restarted = gateways(provider=FaultyProvider())  # the same SQLite file
    one, row = await summary(restarted.http_url, sid)
    assert (one["live"], row["live"]) == (False, False)
    assert [t["status"] for t in one["turns"]] == ["completed", "interrupted"]
    assert await refused(restarted.ws_url, ready, last) == (4410, [])
    # Deleting it still works (and then it is unknown).
    async with httpx.AsyncClient(base_url=restarted.http_url) as http:
        assert (await http.delete(f"/sessions/{sid}")).status_code == 204
    assert await refused(restarted.ws_url, ready, last) == (4404, [])
