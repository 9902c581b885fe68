"""Stored, then sent, while the store fails: no client ever holds an event the
store does not; a short failure is ridden out with no gap or repeat; a long one
closes the client 1011 and the session resumes consistently from the store;
memory stays bounded (the provider is paused) while commits fail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.pipeline import StorePolicy
from tests.support.client import Client
from tests.support.faults import (
    FaultyFactory,
    FaultyProvider,
    Reader,
    check_view,
    faulty_gateways,
    read_store,
    resume_url,
    session_events,
    wait_until,
)


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[FaultyFactory]:
    with faulty_gateways(tmp_path) as start:
        yield start


def is_type(type_: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == type_


async def test_a_store_failure_mid_turn_delivers_nothing_unstored_and_recovers(
    gateways: FaultyFactory,
) -> None:
    gateway = gateways(provider=FaultyProvider(token_delay_s=0.02), GATEWAY_STORE_RETRY_S=20)
    store = gateway.store
    reader = Reader(await Client.connect(f"{gateway.ws_url}/ws"))
    await reader.until(is_type("session.ready"))
    sid = reader.events[0]["session_id"]
    await reader.client.send({"type": "user.message", "text": "Tell me a story", "id": "u1"})
    await reader.until(is_type("response.start"))

    store.failing = True
    failed_before = store.failures["commit"]
    # The provider streams the whole reply meanwhile; none of it can be stored.
    for _ in range(10):
        await asyncio.sleep(0.1)
        held = reader.seqs()
        assert held <= await store.stored_seqs(sid), "a client holds an event the store lacks"
    assert store.failures["commit"] > failed_before, "the fault never hit a commit"
    assert not [e for e in reader.events if e["type"] == "response.end"], (
        "the turn's end reached the client while no commit could store it"
    )
    runtime = gateway.live_runtime(sid)
    assert runtime is not None
    assert runtime._pipeline.backlog > 0

    store.failing = False
    await reader.until(is_type("response.end"))
    await reader.client.send({"type": "user.message", "text": "And then?", "id": "u2"})
    await reader.until(lambda e: e["type"] == "response.end" and e["turn_id"] == "t2")
    await reader.stop()
    gateway.stop()

    view = session_events(reader.events)
    turns = check_view(view)
    assert [t[-1]["status"] for t in turns.values()] == ["completed", "completed"]
    stored, records = await read_store(gateway.db_path, sid)
    assert stored == view
    assert [r.status for r in records] == ["completed", "completed"]


async def test_a_store_failure_past_the_budget_closes_1011_and_the_resume_is_consistent(
    gateways: FaultyFactory,
) -> None:
    gateway = gateways(provider=FaultyProvider(token_delay_s=0.02), GATEWAY_STORE_RETRY_S=1)
    store = gateway.store
    first = Reader(await Client.connect(f"{gateway.ws_url}/ws"))
    await first.until(is_type("session.ready"))
    ready = first.events[0]
    sid = ready["session_id"]
    await first.client.send({"type": "user.message", "text": "Tell me a story", "id": "u1"})
    await first.until(is_type("response.tts"))

    store.failing = True
    code = await first.wait_closed(within_s=15)
    assert code == 1011
    assert first.seqs() <= await store.stored_seqs(sid), "a client got an unstored event"
    assert not [e for e in first.events if e["type"] == "response.end"]
    await wait_until(lambda: gateway.live_runtime(sid) is None)

    # Still failing: a resume is refused (1011) and sends nothing.
    last = max(first.seqs())
    refused = await Client.connect(resume_url(gateway.ws_url, ready, last))
    assert await refused.close_code() == 1011
    assert refused.received == []

    store.failing = False
    async with await Client.connect(resume_url(gateway.ws_url, ready, last)) as again:
        resumed = await again.ready()
        cut = await again.turn("t1")
        await again.send({"type": "user.message", "text": "Once more", "id": "u2"})
        nxt = await again.turn("t2")
    gateway.stop()

    assert (resumed["resumed"], resumed["seq"]) == (True, last)
    assert (cut[-1]["status"], nxt[-1]["status"]) == ("failed", "completed")
    view = session_events(first.events) + session_events(again.received)
    check_view(view)
    stored, _ = await read_store(gateway.db_path, sid)
    # No seq was reused with another event: what the first client got is what is stored.
    by_seq = {e["seq"]: e for e in stored}
    for event in session_events(first.events):
        assert by_seq[event["seq"]] == event
    assert stored == view


async def test_while_commits_fail_the_backlog_stays_bounded_and_the_provider_waits(
    gateways: FaultyFactory,
) -> None:
    provider = FaultyProvider()
    gateway = gateways(
        provider=provider,
        GATEWAY_STORE_RETRY_S=30,
        GATEWAY_REPLAY_EVENTS=8192,
        GATEWAY_SEND_QUEUE=8192,
    )
    store = gateway.store
    bound = StorePolicy().max_backlog
    reader = Reader(await Client.connect(f"{gateway.ws_url}/ws"))
    await reader.until(is_type("session.ready"))
    sid = reader.events[0]["session_id"]
    store.failing = True
    await reader.client.send({"type": "user.message", "text": "[long:3000] count", "id": "u1"})
    await wait_until(lambda: gateway.live_runtime(sid) is not None)
    runtime = gateway.live_runtime(sid)

    await wait_until(lambda: runtime._pipeline.backlog >= bound, within_s=20)
    peak = 0
    tokens = provider.tokens
    for _ in range(50):  # one second of failing commits, the provider ready to go on
        peak = max(peak, runtime._pipeline.backlog)
        await asyncio.sleep(0.02)
    assert peak <= bound + 8, f"backlog {peak} grew past its bound {bound}"
    assert provider.tokens - tokens <= 8, "the provider was not paused"
    assert reader.seqs() == set(), "an unstored event reached the client"

    store.failing = False
    await reader.until(is_type("response.end"), within_s=30)
    await reader.stop()
    gateway.stop()
    view = session_events(reader.events)
    turns = check_view(view)
    assert turns["t1"][-1]["status"] == "completed"
    assert len(turns["t1"]) >= 3000
    stored, _ = await read_store(gateway.db_path, sid)
    assert stored == view


async def test_while_the_store_is_down_health_answers_ready_says_503_and_new_sessions_get_1011(
    gateways: FaultyFactory,
) -> None:
    gateway = gateways(store_options={"fail_methods": ["commit", "create", "get", "ping"]})
    gateway.store.failing = True
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/ready")).status_code == 503
        refused = await Client.connect(f"{gateway.ws_url}/ws")
        assert await refused.close_code() == 1011
        assert refused.received == []
        gateway.store.failing = False
        assert (await http.get("/ready")).status_code == 200
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("Back again")
        assert (await client.turn())[-1]["status"] == "completed"
