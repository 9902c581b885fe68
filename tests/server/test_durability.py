"""Sessions survive a SIGKILL of the gateway: nothing sent is lost or repeated."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.client import Client
from tests.support.process import free_port, gateway_process


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

    with gateway_process("--port", str(port), **env):
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
