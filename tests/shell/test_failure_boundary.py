"""One failure boundary per session: 50 concurrent sessions on one real server,
faults injected in ten of them (provider exceptions at random points, bugs in the
core path, one the runtime cannot go on from); every other session is untouched,
and every client's view matches what the SQLite store holds."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from gateway.core.session import Session
from tests.support.client import Client
from tests.support.faults import (
    FaultyFactory,
    FaultyProvider,
    check_view,
    faulty_gateways,
    read_store,
    resume_url,
    session_events,
)

SESSIONS = 50
TURNS = 3
#: The user texts that make something fail, one per faulty session (the fault is
#: in turn 2 of 3, the first and last turns are normal).
FAULTS = [
    "[raise-before]",
    "[raise-mid]",
    "[raise-end]",
    "[random]",
    "[random]",
    "[random]",
    "[random]",
    "[core-crash]",
    "[core-crash]",
    "[core-fatal]",
]


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[FaultyFactory]:
    with faulty_gateways(tmp_path) as start:
        yield start


@pytest.fixture
def core_bugs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bugs inside the core, for the turns whose user text asks for them:
    ``provider_done`` raises for ``[core-crash]`` and ``[core-fatal]``, and failing
    the turn raises too for ``[core-fatal]`` (the runtime cannot go on)."""
    done, failed = Session.provider_done, Session.provider_failed

    def user_text(session: Session) -> str:
        turn = session._turn
        return (turn.user_text or "") if turn is not None else ""

    def provider_done(self: Session, turn_id: str, now: float) -> None:
        text = user_text(self)
        if "[core-crash]" in text or "[core-fatal]" in text:
            raise KeyError(f"injected bug in provider_done of {turn_id}")
        done(self, turn_id, now)

    def provider_failed(self: Session, turn_id: str, now: float, **kwargs: Any) -> None:
        if "[core-fatal]" in user_text(self):
            raise RuntimeError(f"injected bug in provider_failed of {turn_id}")
        failed(self, turn_id, now, **kwargs)

    monkeypatch.setattr(Session, "provider_done", provider_done)
    monkeypatch.setattr(Session, "provider_failed", provider_failed)


async def run_session(ws_url: str, index: int, fault: str | None) -> dict[str, Any]:
    """Talk ``TURNS`` turns; the fault (if any) in turn 2. Reconnects once if the
    gateway closes the socket 1011, the way the protocol's client recipe says."""
    client = await Client.connect(f"{ws_url}/ws")
    ready = await client.ready()
    connections = [client]
    codes: list[int | None] = []
    for turn in range(1, TURNS + 1):
        text = f"Session {index} turn {turn}"
        if turn == 2 and fault is not None:
            text = f"{fault} {text}"
        await client.send({"type": "user.message", "text": text, "id": f"u{turn}"})
        try:
            await client.recv_until(
                lambda e, turn=turn: e["type"] == "response.end" and e["turn_id"] == f"t{turn}"
            )
        except ConnectionClosed as closed:
            codes.append(closed.rcvd.code if closed.rcvd else None)
            last = max((e["seq"] for e in session_events(client.received)), default=0)
            client = await Client.connect(resume_url(ws_url, ready, last))
            connections.append(client)
            resumed = await client.ready()
            assert (resumed["resumed"], resumed["seq"]) == (True, last)
            await client.turn(f"t{turn}")  # the replay brings the cut turn's end
    await client.ws.close()
    view = [e for c in connections for e in session_events(c.received)]
    return {"ready": ready, "view": view, "codes": codes, "fault": fault}


async def test_faults_in_ten_sessions_never_reach_the_other_forty(
    gateways: FaultyFactory, core_bugs: None
) -> None:
    provider = FaultyProvider(seed=10, token_delay_s=0.003)
    gateway = gateways(provider=provider)
    rng = random.Random(10)
    faulty = dict(zip(rng.sample(range(SESSIONS), len(FAULTS)), FAULTS, strict=True))

    results = await asyncio.gather(
        *(run_session(gateway.ws_url, i, faulty.get(i)) for i in range(SESSIONS))
    )

    # The process is fine: health answers and a new session talks.
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/ready")).status_code == 200
    async with await Client.connect(f"{gateway.ws_url}/ws") as late:
        await late.ready()
        await late.send("Anyone there after all that?")
        assert (await late.turn())[-1]["status"] == "completed"
    gateway.stop()

    for result in results:
        fault, view = result["fault"], result["view"]
        sid = result["ready"]["session_id"]
        turns = check_view(view)
        statuses = [events[-1]["status"] for events in turns.values()]
        assert len(turns) == TURNS, (fault, statuses)
        stored, records = await read_store(gateway.db_path, sid)
        assert stored == view, f"session {sid} ({fault}): the client's view is not the store's"
        assert [r.status for r in records] == statuses
        if fault is None:
            assert statuses == ["completed"] * TURNS, sid
            assert result["codes"] == []
            assert not [e for e in view if e["type"] == "error"]
            continue
        assert statuses == ["completed", "failed", "completed"], (fault, statuses)
        errors = [e for e in view if e["type"] == "error"]
        if fault == "[core-fatal]":
            # The runtime could not even fail the turn: its client was closed 1011,
            # and the resumed session ended the cut turn from the store and went on.
            assert result["codes"] == [1011]
            assert errors == []
            assert "restarted" in turns["t2"][-1]["reason"]
        else:
            assert result["codes"] == [], fault
            assert [(e["code"], e["turn_id"], e["fatal"]) for e in errors] == [
                ("internal_error", "t2", False)
            ], fault
            assert turns["t2"][-1]["reason"] == "internal_error"
    raised = {f.where for f in provider.raised}
    assert {"before", "mid", "end"} <= raised
    assert {f.session_id for f in provider.raised} <= {
        results[i]["ready"]["session_id"] for i in faulty
    }
