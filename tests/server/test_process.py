"""The gateway as users start it: a real process from the console entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.support.client import Client
from tests.support.process import STARTUP_TIMEOUT_S, clean_env, free_port, gateway_process


async def test_python_dash_m_serves_ws_on_the_offline_provider() -> None:
    port = free_port()
    with gateway_process(
        "--port", str(port), GATEWAY_OFFLINE_DELAY_MS="0", GATEWAY_STORE="memory://"
    ) as (_, lines):
        log = "".join(lines)
        assert "OFFLINE provider" in log
        assert f"http://127.0.0.1:{port}" in log
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{port}/health")
        assert health.json()["status"] == "ok"
        async with await Client.connect(f"ws://127.0.0.1:{port}/ws") as client:
            ready = await client.ready()
            await client.send("Hola, ¿cómo estás?")
            events = await client.turn()
    assert ready["provider"] == "offline"
    assert len([e for e in events if e["type"] == "response.tts"]) >= 2


def test_a_bad_setting_stops_startup_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        env=clean_env(GATEWAY_PORT="eighty"),
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 2
    assert "GATEWAY_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_help() -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "voice-gateway")
    result = subprocess.run(
        [exe, "--help"], capture_output=True, text=True, check=True, timeout=STARTUP_TIMEOUT_S
    )
    for flag in ("--host", "--port", "--log-level"):
        assert flag in result.stdout


def test_a_serving_process_freezes_its_start_up_heap_and_spaces_full_collections() -> None:
    # Full garbage collections would otherwise walk the SDKs' and pydantic's
    # start-up objects each time, pausing every session (gateway/heap.py).
    port = free_port()
    with gateway_process(
        "--port", str(port), GATEWAY_STORE="memory://", GATEWAY_LOG_LEVEL="debug"
    ) as (_, lines):
        pass
    froze = [line for line in lines if "start-up objects out of the garbage" in line]
    assert froze, "".join(lines)
    count = int(froze[0].split("froze ", 1)[1].split()[0])
    assert count > 10_000  # the imported SDKs alone are hundreds of thousands
    # Full collections, which walk every live session's objects, are spaced out.
    assert "a full collection at most every 100 middle ones" in froze[0]
