"""Reconnect and resume: nothing lost, nothing repeated; takeover; idempotent input."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini, wait_event
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer


def resume_url(gateway: RunningServer, ready: dict[str, Any], last_seq: int) -> str:
    return (
        f"{gateway.ws_url}/ws?session_id={ready['session_id']}"
        f"&resume_token={ready['resume_token']}&last_seq={last_seq}"
    )


async def turn_status(gateway: RunningServer, session_id: str, status: str) -> None:
    """Wait until the session's newest turn has ``status`` in the HTTP API."""
    async with httpx.AsyncClient(base_url=gateway.http_url) as http, asyncio.timeout(20):
        while True:
            turns = (await http.get(f"/sessions/{session_id}")).json()["turns"]
            if turns and turns[-1]["status"] == status:
                return
            await asyncio.sleep(0.05)


async def test_drop_mid_turn_and_resume_gets_every_event_once_in_order(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    reply = " ".join(f"Sentence number {i} is here." for i in range(12))
    fake_gemini.reply(reply, chunk_size=6, delay_s=0.01)
    client = await Client.connect(f"{gemini_gateway.ws_url}/ws")
    ready = await client.ready()
    await client.send({"type": "user.message", "text": "Count", "id": "u1"})
    first = await client.recv_until(lambda e: e["type"] == "response.tts" and e["index"] == 2)
    await client.ws.close()
    # Resume only once the turn is over, so that all the rest must come from the replay.
    await turn_status(gemini_gateway, ready["session_id"], "completed")

    async with await Client.connect(resume_url(gemini_gateway, ready, first[-1]["seq"])) as again:
        resumed = await again.ready()
        rest = await again.turn()
    assert len([e for e in rest if e["type"] == "response.tts"]) >= 3  # replayed
    assert resumed["resumed"] is True
    assert resumed["seq"] == first[-1]["seq"]
    assert resumed["session_id"] == ready["session_id"]
    events = first + rest
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    chunks = [e for e in events if e["type"] == "response.tts"]
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert " ".join(c["text"] for c in chunks) == reply
    assert events[-1]["status"] == "completed"


async def test_resume_after_the_log_was_trimmed_gets_a_resync(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_REPLAY_EVENTS=16)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        ready = await client.ready()
        for i in range(4):
            await client.send(f"Message {i}")
            await client.turn()
        newest = client.received[-1]["seq"]
    assert newest > 16
    async with await Client.connect(resume_url(gateway, ready, 1)) as again:
        resumed = await again.ready()
        resync = await again.recv()
        await again.send("And now?")
        turn = await again.turn()
    assert resumed["resumed"] is True
    assert resync["type"] == "session.resync"
    assert resync["seq"] == newest
    assert [m["role"] for m in resync["transcript"]] == ["user", "assistant"] * 4
    assert resync["transcript"][0]["text"] == "Message 0"
    assert turn[0]["seq"] == newest + 1


async def test_a_second_connection_takes_the_session_over(offline_gateway: RunningServer) -> None:
    first = await Client.connect(f"{offline_gateway.ws_url}/ws")
    ready = await first.ready()
    await first.send("Hello")
    await first.turn()
    last = first.received[-1]["seq"]
    async with await Client.connect(resume_url(offline_gateway, ready, last)) as second:
        resumed = await second.ready()
        code = await first.close_code()
        await second.send("Still me")
        turn = await second.turn()
    assert code == 4409
    assert resumed["seq"] == last
    assert turn[0]["seq"] == last + 1
    assert all(e["seq"] <= last for e in first.received)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("session_id={sid}&resume_token=wrong&last_seq=0", 4401),
        ("session_id=s_nope&resume_token={token}&last_seq=0", 4404),
        ("session_id={sid}&last_seq=0", 4400),
        ("session_id={sid}&resume_token={token}&last_seq=-1", 4400),
    ],
)
async def test_bad_resume_requests_are_refused_with_a_close_code(
    offline_gateway: RunningServer, query: str, code: int
) -> None:
    async with await Client.connect(f"{offline_gateway.ws_url}/ws") as owner:
        ready = await owner.ready()
        url = f"{offline_gateway.ws_url}/ws?" + query.format(
            sid=ready["session_id"], token=ready["resume_token"]
        )
        intruder = await Client.connect(url)
        assert await intruder.close_code() == code
        assert intruder.received == []
        await owner.send({"type": "ping", "id": "still-mine"})
        assert (await owner.recv())["id"] == "still-mine"


async def test_a_resent_message_id_after_reconnect_is_a_duplicate(
    offline_gateway: RunningServer,
) -> None:
    client = await Client.connect(f"{offline_gateway.ws_url}/ws")
    ready = await client.ready()
    await client.send({"type": "user.message", "text": "Book it", "id": "u-42"})
    turn = await client.turn()
    await client.ws.close()
    async with await Client.connect(resume_url(offline_gateway, ready, 0)) as again:
        await again.ready()
        replayed = await again.recv_until(lambda e: e["seq"] == turn[-1]["seq"])
        await again.send({"type": "user.message", "text": "Book it", "id": "u-42"})
        dup = await again.recv()
    assert [e["seq"] for e in replayed] == [e["seq"] for e in turn]
    assert (dup["type"], dup["id"], dup["turn_id"]) == (
        "user.duplicate",
        "u-42",
        turn[0]["turn_id"],
    )


async def test_a_turn_keeps_streaming_through_the_grace_window(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=15, GATEWAY_RESUME_GRACE_S=30)
    client = await Client.connect(f"{gateway.ws_url}/ws")
    ready = await client.ready()
    await client.send("Tell me something")
    head = await client.recv_type("response.start")
    await client.ws.close()
    async with await Client.connect(resume_url(gateway, ready, head[-1]["seq"])) as again:
        await again.ready()
        rest = await again.turn()
    assert rest[-1]["status"] == "completed"
    assert [e["seq"] for e in rest] == list(range(head[-1]["seq"] + 1, rest[-1]["seq"] + 1))


async def test_past_the_grace_window_the_turn_ends_and_the_session_stays(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_gateway(
        GEMINI_API_KEY="k", GEMINI_BASE_URL=fake_gemini.url, GATEWAY_RESUME_GRACE_S=0
    )
    stalled = fake_gemini.stall(after_chunks=["Once upon a time. ", "There"])
    client = await Client.connect(f"{gateway.ws_url}/ws")
    ready = await client.ready()
    await client.send("Tell me something")
    head = await client.recv_type("response.tts")
    await client.ws.close()
    assert await wait_event(stalled.client_gone), "the turn was not stopped after the grace"
    async with await Client.connect(resume_url(gateway, ready, head[-1]["seq"])) as again:
        await again.ready()
        rest = await again.turn()
        await again.send("Are you there?")
        nxt = await again.turn()
    assert rest[-1]["status"] == "interrupted"
    assert "did not come back" in rest[-1]["reason"]
    assert rest[-1]["spoken_text"] == "Once upon a time."
    assert nxt[-1]["status"] == "completed"
    assert fake_gemini.requests[-1].turns[-3:] == [
        ("user", ["Tell me something"]),
        ("model", ["Once upon a time."]),
        ("user", ["Are you there?"]),
    ]


async def test_idle_connections_get_heartbeats_at_the_current_seq(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_HEARTBEAT_S=0.2)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send({"type": "ping", "id": 1})
        pong = await client.recv()
        beat = await client.recv()
    assert beat == {"type": "heartbeat", "session_id": pong["session_id"], "seq": pong["seq"]}


async def test_a_dead_connection_is_dropped_and_its_session_stays_resumable(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(
        GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_PING_INTERVAL_S=0.2, GATEWAY_PING_TIMEOUT_S=0.2
    )
    async with httpx.AsyncClient() as http:
        created = (await http.post(f"{gateway.http_url}/sessions")).json()
    # A client that completes the handshake, then never answers a ping.
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    writer.write(
        (
            f"GET /ws?session_id={created['session_id']}&resume_token={created['resume_token']}"
            f"&last_seq=0 HTTP/1.1\r\nHost: {gateway.host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    async with asyncio.timeout(10):
        while await reader.read(4096):
            pass  # the server sends ready and pings, then gives up and closes
    writer.close()
    await writer.wait_closed()
    async with await Client.connect(resume_url(gateway, created, 0)) as client:
        ready = await client.ready()
        await client.send("Hello again")
        turn = await client.turn()
    assert ready["resumed"] is True
    assert turn[-1]["status"] == "completed"


async def test_random_disconnects_never_lose_or_repeat_a_chunk(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=2, GATEWAY_RESUME_GRACE_S=30)
    rng = random.Random(20261122)
    seen: dict[int, dict[str, Any]] = {}
    client = await Client.connect(f"{gateway.ws_url}/ws")
    ready = await client.ready()
    turns_sent = 0
    try:
        while turns_sent < 8:
            await client.send(
                {"type": "user.message", "text": f"Turn {turns_sent}", "id": f"u{turns_sent}"}
            )
            turns_sent += 1
            done = False
            while not done:
                cut_after = rng.randint(1, 12)
                try:
                    for _ in range(cut_after):
                        event = await client.recv()
                        assert event["seq"] not in seen, f"repeated seq {event['seq']}"
                        assert event["seq"] == max(seen, default=0) + 1, "gap before " + str(event)
                        seen[event["seq"]] = event
                        if event["type"] == "response.end":
                            done = True
                            break
                finally:
                    if not done:
                        await client.ws.close()
                if not done:
                    client = await Client.connect(resume_url(gateway, ready, max(seen)))
                    assert (await client.ready())["resumed"] is True
    finally:
        await client.ws.close()
    async with httpx.AsyncClient() as http:
        transcript = (await http.get(f"{gateway.http_url}/sessions/{ready['session_id']}")).json()
    events = [seen[s] for s in sorted(seen)]
    by_turn: dict[str, list[str]] = {}
    for event in events:
        if event["type"] == "response.tts":
            by_turn.setdefault(event["turn_id"], []).append(event["text"])
    ends = {e["turn_id"]: e for e in events if e["type"] == "response.end"}
    assert len(transcript["turns"]) == 8
    for turn in transcript["turns"]:
        assert turn["status"] == "completed"
        assert ends[turn["turn_id"]]["text"] == turn["text"]
        assert " ".join(by_turn[turn["turn_id"]]) == turn["text"]
