"""Sessions survive a SIGKILL of the gateway: nothing sent is lost or repeated, and
no client ever holds an event the store does not."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.stores.sqlite import SqliteStore
from tests.support.client import Client
from tests.support.process import free_port, gateway_process


async def stored_events(db: Path, session_id: str) -> dict[int, dict[str, Any]]:
    """What the SQLite file holds for the session, by seq."""
    store = SqliteStore(db)
    await store.open()
    try:
        events = await store.read_events(session_id, 0)
    finally:
        await store.aclose()
    return {e.seq: orjson.loads(e.data) for e in events}


def unstored(received: list[dict[str, Any]], stored: dict[int, dict[str, Any]]) -> list[int]:
    """The seqs a client holds that the store does not hold as the same event."""
    return [e["seq"] for e in received if stored.get(e["seq"]) != e]


async def test_resume_after_sigkill_and_restart(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "GATEWAY_STORE": f"sqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_OFFLINE_DELAY_MS": "40",
    }
    base = f"ws://127.0.0.1:{port}/ws"
    with gateway_process("--port", str(port), **env) as (proc, _):
        client = await Client.connect(base)
        ready = await client.ready()
        await client.send({"type": "user.message", "text": "My name is Ada", "id": "u1"})
        await client.turn()
        await client.send({"type": "user.message", "text": "Tell me more", "id": "u2"})
        await client.recv_until(lambda e: e["type"] == "response.tts")
        proc.kill()
        proc.wait()
    received = client.received[1:]  # after session.ready
    last = received[-1]["seq"]
    cut_turn = received[-1]["turn_id"]

    stored = await stored_events(tmp_path / "gateway.db", ready["session_id"])
    assert unstored(received, stored) == []  # stored, then sent

    with gateway_process("--port", str(port), **env):
        async with httpx.AsyncClient() as http:
            before = (
                await http.get(f"http://127.0.0.1:{port}/sessions/{ready['session_id']}")
            ).json()
        # The cut turn is failed at start-up, before anyone resumes.
        assert [t["status"] for t in before["turns"]] == ["completed", "failed"]
        url = f"{base}?session_id={ready['session_id']}&resume_token={ready['resume_token']}"
        async with await Client.connect(f"{url}&last_seq={last}") as again:
            resumed = await again.ready()
            rest = await again.turn(cut_turn)
            await again.send({"type": "user.message", "text": "Tell me more", "id": "u2"})
            dup = await again.recv()
            await again.send({"type": "user.message", "text": "What was my name?", "id": "u3"})
            nxt = await again.turn()
        async with httpx.AsyncClient() as http:
            transcript = (
                await http.get(f"http://127.0.0.1:{port}/sessions/{ready['session_id']}")
            ).json()

    assert resumed["resumed"] is True
    events = received + rest + [dup] + nxt
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    end = rest[-1]
    assert (end["type"], end["status"]) == ("response.end", "failed")
    assert "restarted" in end["reason"]
    chunks = [
        e["text"]
        for e in received + rest
        if e.get("turn_id") == cut_turn and e["type"] == "response.tts"
    ]
    assert end["spoken_text"] == " ".join(chunks)
    assert (dup["type"], dup["id"]) == ("user.duplicate", "u2")
    assert nxt[-1]["status"] == "completed"
    assert "message 3 of our conversation" in nxt[-1]["text"]
    assert [t["status"] for t in transcript["turns"]] == ["completed", "failed", "completed"]


async def test_a_locked_store_holds_delivery_back_through_a_sigkill(tmp_path: Path) -> None:
    """While another writer holds the SQLite file, the turn's events are not sent;
    killed in that state and restarted, the session goes on with no seq reused."""
    port = free_port()
    db = tmp_path / "gateway.db"
    env = {
        "GATEWAY_STORE": f"sqlite:///{db}",
        "GATEWAY_OFFLINE_DELAY_MS": "20",
        "GATEWAY_STORE_RETRY_S": "60",
    }
    base = f"ws://127.0.0.1:{port}/ws"
    blocker = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        with gateway_process("--port", str(port), **env) as (proc, _):
            client = await Client.connect(base)
            ready = await client.ready()
            await client.send({"type": "user.message", "text": "Tell me a story", "id": "u1"})
            await client.recv_until(lambda e: e["type"] == "response.tts")
            blocker.execute("BEGIN IMMEDIATE")  # hold the write lock past the busy timeout
            held: list[dict[str, Any]] = []
            try:
                while True:
                    async with asyncio.timeout(6.5):
                        held.append(await client.recv())
            except TimeoutError:
                pass
            proc.kill()
            proc.wait()
    finally:
        blocker.close()  # the lock goes with the connection
    received = client.received[1:]
    stored = await stored_events(db, ready["session_id"])
    assert unstored(received, stored) == []
    assert not any(e["type"] == "response.end" for e in received)
    last = received[-1]["seq"]

    with gateway_process("--port", str(port), **env):
        url = f"{base}?session_id={ready['session_id']}&resume_token={ready['resume_token']}"
        async with await Client.connect(f"{url}&last_seq={last}") as again:
            await again.ready()
            rest = await again.turn()
            await again.send("And then?")
            nxt = await again.turn()
    events = received + rest + nxt
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert rest[-1]["status"] == "failed"
    assert nxt[-1]["status"] == "completed"
