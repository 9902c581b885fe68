"""Graceful shutdown of a real gateway process on SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.process import free_port, gateway_process


async def test_sigterm_lets_the_turn_finish_tells_clients_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "GATEWAY_STORE": f"sqlite:///{tmp_path / 'g.db'}",
        "GATEWAY_OFFLINE_DELAY_MS": "25",
        "GATEWAY_DRAIN_S": "20",
        "GATEWAY_RECONNECT_DELAY_MS": "1500",
    }
    url = f"ws://127.0.0.1:{port}/ws"
    with gateway_process("--port", str(port), **env) as (proc, lines):
        talking = await Client.connect(url)
        ready = await talking.ready()
        idle = await Client.connect(url)
        await idle.ready()
        await talking.send("Tell me about the weather")
        await talking.recv_type("response.start")
        proc.send_signal(signal.SIGTERM)
        notice = await talking.recv_type("session.reconnect")
        rest = await talking.turn()
        talking_code = await talking.close_code()
        idle_events = await idle.recv_type("session.reconnect")
        idle_code = await idle.close_code()
        with pytest.raises(ConnectionRefusedError):
            await Client.connect(url)
        assert proc.wait(timeout=30) == 0
    assert (notice[-1]["delay_ms"], notice[-1]["reason"]) == (1500, "the gateway is shutting down")
    assert rest[-1]["status"] == "completed"
    assert (talking_code, idle_code) == (1012, 1012)
    assert idle_events[-1]["type"] == "session.reconnect"
    assert "draining 2 session(s)" in "".join(lines)

    last = talking.received[-1]["seq"]
    with gateway_process("--port", str(port), **env):
        resume = f"{url}?session_id={ready['session_id']}&resume_token={ready['resume_token']}"
        async with await Client.connect(f"{resume}&last_seq={last}") as again:
            resumed = await again.ready()
            await again.send("And tomorrow?")
            nxt = await again.turn()
    assert resumed["seq"] == last
    assert nxt[0]["seq"] == last + 1
    assert "message 2 of our conversation" in nxt[-1]["text"]


async def test_the_drain_deadline_ends_a_long_turn(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "GATEWAY_STORE": f"sqlite:///{tmp_path / 'g.db'}",
        "GATEWAY_OFFLINE_DELAY_MS": "300",
        "GATEWAY_DRAIN_S": "0.5",
    }
    with gateway_process("--port", str(port), **env) as (proc, _):
        client = await Client.connect(f"ws://127.0.0.1:{port}/ws")
        await client.ready()
        await client.send("Tell me a long story")
        await client.recv_type("response.start")
        proc.send_signal(signal.SIGTERM)
        events = await client.turn()
        code = await client.close_code()
        assert proc.wait(timeout=30) == 0
    assert (events[-1]["status"], events[-1]["reason"]) == (
        "interrupted",
        "the gateway is shutting down",
    )
    assert code == 1012
