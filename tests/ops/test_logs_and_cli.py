"""JSON logs parse line by line and carry their ids; the start-up rough edges
a newcomer hits are each fixed (bind before "listening", a busy port, --workers,
the store's whereabouts, misspelt settings)."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import orjson

from gateway.logformat import describe_store, safe_url
from tests.support.client import Client
from tests.support.process import STARTUP_TIMEOUT_S, clean_env, free_port, gateway_process

TWILIO_SETUP = {
    "type": "setup",
    "sessionId": "VX00000000000000000000000000000001",
    "accountSid": "AC00000000000000000000000000000001",
    "callSid": "CA00000000000000000000000000000001",
    "from": "+18005550100",
    "to": "+18005550101",
}


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_S,
    )


async def test_json_logs_parse_and_every_line_of_a_connection_carries_its_ids(tmp_path) -> None:
    port = free_port()
    env = {
        "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_STORE": f"sqlite:///{tmp_path / 'g.db'}",
        "GATEWAY_OFFLINE_DELAY_MS": "0",
    }
    with gateway_process("--port", str(port), **env) as (proc, lines):
        async with httpx.AsyncClient() as http:
            health = await http.get(
                f"http://127.0.0.1:{port}/health", headers={"X-Request-ID": "req-health-1"}
            )
        async with await Client.connect(f"ws://127.0.0.1:{port}/ws") as client:
            ready = await client.ready()
            await client.send("hello there")
            await client.turn()
        async with await Client.connect(f"ws://127.0.0.1:{port}/twilio") as call:
            await call.send(TWILIO_SETUP)
            await call.send({"type": "prompt", "voicePrompt": "hi", "lang": "en-US", "last": True})
            await call.recv_until(lambda f: f["type"] == "text" and f["last"])
            await call.send("this is not JSON")
            await call.send({"type": "prompt", "voicePrompt": "bye", "lang": "en-US", "last": True})
            await call.recv_until(lambda f: f["type"] == "text" and f["last"])
    assert health.headers["x-request-id"] == "req-health-1"
    records = [orjson.loads(line) for line in lines if line.strip()]
    assert len(records) == len([line for line in lines if line.strip()])
    for record in records:
        assert {"time", "level", "logger", "message", "session_id", "turn_id", "route"} <= set(
            record
        ), record
        assert "request_id" in record
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any(r["request_id"] == "req-health-1" and r["route"] == "/health" for r in access)
    session_id = ready["session_id"]
    mine = [r for r in records if r["session_id"] == session_id]
    messages = [r["message"] for r in mine]
    assert any("connection open" in m for m in messages)
    assert any(m.startswith("turn end") for m in messages)
    assert any("connection closed" in m for m in messages)
    connection = [r for r in mine if r["route"] == "/ws"]
    assert len({r["request_id"] for r in connection}) == 1, "one request id per connection"
    turn_end = next(r for r in mine if r["message"].startswith("turn end"))
    assert turn_end["turn_id"] == "t1"
    assert "hello there" not in "".join(lines)
    # A line that names no session itself still carries the call's, from the context.
    dropped = next(r for r in records if "frame that is not JSON dropped" in r["message"])
    assert "session=" not in dropped["message"]
    assert dropped["route"] == "/twilio"
    assert dropped["session_id"] is not None
    assert dropped["session_id"].startswith("twilio_")
    started = next(i for i, r in enumerate(records) if "listening on http" in r["message"])
    store = next(r for r in records if r["message"].startswith("session store:"))
    assert str(tmp_path / "g.db") in store["message"]
    assert records.index(store) < started, "listening is logged once the port is bound"


def test_a_busy_port_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--port", str(port), GATEWAY_STORE="memory://")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"voice-gateway: cannot listen on 127.0.0.1:{port}: the port is already in use "
        "(another gateway?); stop it or choose another port with --port or GATEWAY_PORT"
    ]
    assert "listening on http" not in result.stderr + result.stdout


def test_workers_says_why_it_is_refused() -> None:
    result = run_cli("--workers", "2")
    assert result.returncode == 2
    assert "invalid choice" not in result.stderr
    assert "--workers 2" in result.stderr
    assert "one process" in result.stderr
    assert "Redis" in result.stderr


def test_a_misspelt_setting_is_warned_with_a_suggestion(tmp_path) -> None:
    port = free_port()
    env = {"GATWAY_API_KEYS": "x" * 20, "GATEWAY_STOER": "memory://", "GATEWAY_STORE": "memory://"}
    with gateway_process("--port", str(port), **env) as (_, lines):
        log = "".join(lines)
    assert "unknown setting GATWAY_API_KEYS is ignored; did you mean GATEWAY_API_KEYS?" in log
    assert "unknown setting GATEWAY_STOER is ignored; did you mean GATEWAY_STORE?" in log
    assert "x" * 20 not in log


def test_store_descriptions_name_the_place_and_hide_passwords(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert describe_store("sqlite:///voice-gateway.db") == (
        f"sqlite file {tmp_path.resolve() / 'voice-gateway.db'}"
    )
    assert describe_store("sqlite:////var/lib/g.db") == "sqlite file /var/lib/g.db"
    assert "nothing survives" in describe_store("memory://")
    assert describe_store("redis://:hunter2@redis:6379/0") == "redis://:***@redis:6379/0"
    assert safe_url("redis://user:pw@host/1") == "redis://user:***@host/1"
    assert safe_url("redis://redis:6379/0") == "redis://redis:6379/0"
