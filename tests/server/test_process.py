"""The gateway as users start it: a real process from the console entry point."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.support.client import Client

STARTUP_TIMEOUT_S = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GEMINI_", "GATEWAY_", "GOOGLE_GENAI_"))
        and k not in ("GOOGLE_API_KEY", "PORT")
    }
    env.update(extra)
    return env


@contextmanager
def gateway_process(*args: str, **env: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Start ``python -m gateway`` and wait (by reading its log) until it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Application startup complete" in line:
                break
        else:
            raise AssertionError("gateway exited before serving:\n" + "".join(lines))
        yield proc, lines
    finally:
        proc.terminate()
        proc.communicate(timeout=STARTUP_TIMEOUT_S)


async def test_python_dash_m_serves_ws_on_the_offline_provider() -> None:
    port = _free_port()
    with gateway_process("--port", str(port), GATEWAY_OFFLINE_DELAY_MS="0") as (_, lines):
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
        env=_env(GATEWAY_PORT="eighty"),
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
