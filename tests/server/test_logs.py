"""Secrets and personal data never reach the logs at INFO or above."""

from __future__ import annotations

from pathlib import Path

from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini
from tests.support.process import free_port, gateway_process

API_KEY = "AIzaSy-test-secret-key-0123456789"
USER_SECRET = "my passport number is XQ9931"
MODEL_SECRET = "Your passport XQ9931 is noted"


async def test_no_key_token_or_transcript_in_the_logs(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    port = free_port()
    fake_gemini.reply(f"{MODEL_SECRET}. Anything else?")
    fake_gemini.fail(429)
    fake_gemini.fail(400)
    env = {
        "GEMINI_API_KEY": API_KEY,
        "GEMINI_BASE_URL": fake_gemini.url,
        "GATEWAY_STORE": f"sqlite:///{tmp_path / 'g.db'}",
        "GATEWAY_LOG_LEVEL": "info",
        "GATEWAY_PROVIDER_BACKOFF_S": "0",
    }
    with gateway_process("--port", str(port), **env) as (_, lines):
        client = await Client.connect(f"ws://127.0.0.1:{port}/ws")
        ready = await client.ready()
        await client.send(USER_SECRET)
        await client.turn()
        await client.ws.close()
        token = ready["resume_token"]
        url = f"ws://127.0.0.1:{port}/ws?session_id={ready['session_id']}&resume_token={token}"
        async with await Client.connect(f"{url}&last_seq=0") as again:
            await again.ready()
            await again.send(f"{USER_SECRET}, again")
            failed = await again.turn("t2")
        bad = await Client.connect(f"{url[: -len(token)]}wrong-{token}")
        await bad.close_code()
    assert failed[-1]["status"] == "failed"
    log = "".join(lines)
    assert "turn end session=" in log, "the log should still say what happened"
    assert "resume_token=***" in log
    for secret in (API_KEY, token, "XQ9931", "passport"):
        assert secret not in log, f"{secret!r} leaked into the log"
