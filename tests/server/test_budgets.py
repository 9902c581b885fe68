"""Byte budgets: instructions, conversation size, stored sessions, bytes in per second
(issue 14, item 3)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx

from tests.support.client import Client
from tests.support.gateway import GatewayFactory


async def test_oversized_instructions_are_refused_and_not_stored(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_MAX_INSTRUCTIONS_CHARS=100)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send({"type": "session.update", "instructions": "x" * 101})
        refused = await client.recv()
        await client.send({"type": "response.create", "instructions": "y" * 101})
        refused_too = await client.recv()
        await client.send({"type": "session.update", "instructions": "Be brief."})
        updated = await client.recv()
    assert (refused["type"], refused["code"], refused["fatal"]) == (
        "error",
        "instructions_too_long",
        False,
    )
    assert refused_too["code"] == "instructions_too_long"
    assert (updated["type"], updated["instructions"]) == ("session.updated", "Be brief.")


async def test_a_full_session_refuses_more_conversation(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_MAX_SESSION_CHARS=1000)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("a" * 300)
        await client.turn()  # the offline echo adds the reply to the history too
        await client.send("b" * 600)
        refused = await client.recv()
        await client.send("short")
        ok = await client.turn()
    assert (refused["type"], refused["code"]) == ("error", "session_full")
    assert ok[-1]["status"] == "completed"


async def test_stored_sessions_are_capped_per_address_with_auth_off(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(GATEWAY_MAX_SESSIONS_PER_PRINCIPAL=2)
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        made = [(await http.post("/sessions")).status_code for _ in range(3)]
        over = await http.post("/sessions")
    assert made[:2] == [201, 201]
    assert (over.status_code, over.json()["error"]["code"]) == (429, "too_many_sessions")
    bare = await Client.connect(f"{gateway.ws_url}/ws")  # every bare connect stores one
    assert await bare.close_code() == 4429


async def test_stored_sessions_are_capped_per_process(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_MAX_STORED_SESSIONS=3)
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        codes = [(await http.post("/sessions")).status_code for _ in range(4)]
        assert codes == [201, 201, 201, 429]
        first = (await http.get("/sessions")).json()["sessions"][0]["session_id"]
        assert (await http.delete(f"/sessions/{first}")).status_code == 204
        assert (await http.post("/sessions")).status_code == 201


async def test_bytes_in_are_throttled_per_connection(start_gateway: GatewayFactory) -> None:
    """At 16 KiB/s, 64 KiB past the first second's budget cannot arrive in under
    a second (3 s in theory): the server stops reading, TCP pushes back."""
    rate = 16384
    gateway = start_gateway(
        GATEWAY_OFFLINE_DELAY_MS=0,
        GATEWAY_MAX_IN_BYTES_PER_S=rate,
        GATEWAY_RATE_PER_S=1000,
        GATEWAY_RATE_BURST=1000,
    )
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        started = time.monotonic()
        for i in range(80):  # 80 pings of ~1 KiB each, then one to wait for
            await client.send({"type": "ping", "id": i, "padding": "p" * 1000})
        await client.send({"type": "ping", "id": "last"})
        pongs = await client.recv_until(lambda e: e.get("id") == "last")
        elapsed = time.monotonic() - started
    assert len([p for p in pongs if p["type"] == "pong"]) == 81
    assert elapsed > 1.0, f"{elapsed:.2f} s: the byte budget did not hold the client back"


async def test_events_without_turns_do_not_grow_the_stored_log(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """``session.update`` after ``session.update`` starts no turn, so the per-turn
    trim never ran: 64 KB frames at 10/s grew SQLite by 70 MB."""
    gateway = start_gateway(
        GATEWAY_REPLAY_EVENTS=16, GATEWAY_RATE_PER_S=1000, GATEWAY_RATE_BURST=1000
    )
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        ready = await client.ready()
        for i in range(100):
            await client.send({"type": "session.update", "instructions": f"Rule {i}. " * 50})
        updates = await client.recv_until(lambda e: e.get("instructions", "").startswith("Rule 99"))
    assert len(updates) == 100
    with sqlite3.connect(f"file:{tmp_path / 'sessions.db'}?mode=ro", uri=True) as db:
        (stored,) = db.execute(
            "SELECT COUNT(*) FROM events WHERE session_id = ?", (ready["session_id"],)
        ).fetchone()
    assert 0 < stored <= 32


async def test_behind_a_trusted_proxy_the_cap_counts_the_forwarded_address(
    start_gateway: GatewayFactory,
) -> None:
    """The test client is 127.0.0.1, in ``FORWARDED_ALLOW_IPS`` by default."""
    gateway = start_gateway(GATEWAY_MAX_SESSIONS_PER_PRINCIPAL=1)
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        one = {"X-Forwarded-For": "203.0.113.5"}
        two = {"X-Forwarded-For": "198.51.100.7"}
        assert (await http.post("/sessions", headers=one)).status_code == 201
        assert (await http.post("/sessions", headers=one)).status_code == 429
        assert (await http.post("/sessions", headers=two)).status_code == 201
    untrusted = start_gateway(GATEWAY_MAX_SESSIONS_PER_PRINCIPAL=1, FORWARDED_ALLOW_IPS="10.9.9.9")
    async with httpx.AsyncClient(base_url=untrusted.http_url) as http:
        assert (await http.post("/sessions", headers=one)).status_code == 201
        assert (await http.post("/sessions", headers=two)).status_code == 429
