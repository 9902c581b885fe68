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
    wait_until,
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
    "[receive-crash]",
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
    ``receive`` raises after starting the turn for ``[receive-crash]``;
    ``provider_done`` raises for ``[core-crash]`` and ``[core-fatal]``, and failing
    the turn raises too for ``[core-fatal]`` (the runtime cannot go on)."""
    receive, done, failed = Session.receive, Session.provider_done, Session.provider_failed

    def receive_(self: Session, event: Any, now: float) -> None:
        receive(self, event, now)
        if "[receive-crash]" in getattr(event, "text", ""):
            raise ValueError("injected bug in receive, after the turn started")

    def user_text(session: Session) -> str:
        turn = session._turn
        return (turn.user_text or "") if turn is not None else ""

    def provider_done(self: Session, turn_id: str, now: float, *args: Any, **kwargs: Any) -> None:
        text = user_text(self)
        if "[core-crash]" in text or "[core-fatal]" in text:
            raise KeyError(f"injected bug in provider_done of {turn_id}")
        done(self, turn_id, now, *args, **kwargs)

    def provider_failed(self: Session, turn_id: str, now: float, **kwargs: Any) -> None:
        if "[core-fatal]" in user_text(self):
            raise RuntimeError(f"injected bug in provider_failed of {turn_id}")
        failed(self, turn_id, now, **kwargs)

    monkeypatch.setattr(Session, "receive", receive_)
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

    health: list[int] = []

    async def probe_health() -> None:
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            while True:
                health.append((await http.get("/health")).status_code)
                await asyncio.sleep(0.05)

    prober = asyncio.create_task(probe_health())
    results = await asyncio.gather(
        *(run_session(gateway.ws_url, i, faulty.get(i)) for i in range(SESSIONS))
    )
    prober.cancel()
    await asyncio.gather(prober, return_exceptions=True)
    assert health, "the health probe never got an answer"
    assert set(health) == {200}, "/health failed while sessions faulted"

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
    # One per provider fault: none retried, none repeated.
    assert len(provider.raised) == len([f for f in FAULTS if "raise" in f or "random" in f])
    raised = {f.where for f in provider.raised}
    assert {"before", "mid", "end"} <= raised
    assert {f.session_id for f in provider.raised} <= {
        results[i]["ready"]["session_id"] for i in faulty
    }


async def test_random_faults_fail_exactly_the_turns_they_hit(gateways: FaultyFactory) -> None:
    """A seeded RNG faults about a third of all turns, anywhere in the stream."""
    provider = FaultyProvider(seed=7, rate=0.3, token_delay_s=0.002)
    gateway = gateways(provider=provider)

    async def talk(index: int) -> tuple[str, list[dict[str, Any]]]:
        async with await Client.connect(f"{gateway.ws_url}/ws") as client:
            ready = await client.ready()
            for turn in range(1, 5):
                await client.send({"type": "user.message", "text": f"S{index} T{turn}"})
                await client.turn(f"t{turn}")
        return ready["session_id"], session_events(client.received)

    results = await asyncio.gather(*(talk(i) for i in range(20)))
    gateway.stop()
    faulted = {(f.session_id, f.turn_id) for f in provider.raised}
    assert faulted, "the RNG faulted no turn at all"
    for sid, view in results:
        turns = check_view(view)
        for turn_id, events in turns.items():
            expected = "failed" if (sid, turn_id) in faulted else "completed"
            assert events[-1]["status"] == expected, (sid, turn_id)
        errors = [e for e in view if e["type"] == "error"]
        assert {e["code"] for e in errors} <= {"internal_error"}
        assert {(sid, e["turn_id"]) for e in errors} == {k for k in faulted if k[0] == sid}
        stored, _ = await read_store(gateway.db_path, sid)
        assert stored == view


async def test_a_stray_cancelled_error_from_the_provider_fails_the_turn(
    gateways: FaultyFactory,
) -> None:
    provider = FaultyProvider()
    gateway = gateways(provider=provider)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send({"type": "user.message", "text": "[raise-cancel] hi", "id": "u1"})
        try:
            async with asyncio.timeout(1.5):  # a turn of this provider takes milliseconds
                turn = await client.turn("t1")
        except TimeoutError:
            pytest.fail("the turn never ended: no response.end after a stray CancelledError")
        await client.send({"type": "user.message", "text": "Next", "id": "u2"})
        nxt = await client.turn("t2")
    assert [f.where for f in provider.raised] == ["cancel"]
    errors = [e for e in turn if e["type"] == "error"]
    assert [(e["code"], e["turn_id"]) for e in errors] == [("internal_error", "t1")]
    assert turn[-1]["status"] == "failed"
    assert nxt[-1]["status"] == "completed"


async def test_a_provider_that_ignores_cancellation_does_not_hold_up_delete(
    gateways: FaultyFactory,
) -> None:
    provider = FaultyProvider()
    gateway = gateways(provider=provider)
    try:
        async with await Client.connect(f"{gateway.ws_url}/ws") as client:
            ready = await client.ready()
            await client.send({"type": "user.message", "text": "[deaf] talk", "id": "u1"})
            await wait_until(lambda: provider.deaf == 1)
            # Superseding the turn cancels its stream, which does not listen.
            await client.send({"type": "user.message", "text": "Someone else", "id": "u2"})
            turns = await client.turn("t2")
            assert turns[-1]["status"] == "completed"
            assert provider.swallowed >= 1
            async with httpx.AsyncClient(base_url=gateway.http_url, timeout=2) as http:
                try:
                    deleted = await http.delete(f"/sessions/{ready['session_id']}")
                except httpx.TimeoutException:
                    pytest.fail("DELETE waited on a provider stream that ignores its cancel")
            assert deleted.status_code == 204
    finally:
        provider.released.set()
