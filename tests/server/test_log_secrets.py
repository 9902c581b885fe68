"""No secret in any log line, on any route, however it was encoded (issue 14, item 5).

A real ``python -m gateway`` process serves a session on every route with every
kind of credential; its whole log (uvicorn's access lines included) is then
scanned for each secret.
"""

from __future__ import annotations

import logging
import sys
import time

import httpx
import orjson

from gateway.logs import RedactSecrets, redact
from tests.adapters.http_helpers import layercode_signature
from tests.support.client import Client
from tests.support.process import free_port, gateway_process

API_KEY = "alice-secret-key-0123456789"
ADMIN_KEY = "admin-secret-key-0123456789"
RETELL_SECRET = "retell-path-secret-0123456789"
OPENAI_KEY = "openai-secret-key-0123456789"
LAYERCODE_SECRET = "layercode-secret-0123456789"
PIN = "my PIN is 4921"


def test_redact_masks_credentials_however_encoded() -> None:
    line = (
        '127.0.0.1:5 - "WebSocket /ws?%74oken=K1&session_id=s&resume%5Ftoken=K2&TOKEN=K3'
        '&Api%5FKey=K4&resume_token=K5&x=1" [accepted]'
    )
    masked = redact(line)
    for secret in ("K1", "K2", "K3", "K4", "K5"):
        assert f"={secret}" not in masked
    assert "session_id=s" in masked
    assert "x=1" in masked
    assert redact('"WebSocket /retell/abc123secret/call_9" 403') == (
        '"WebSocket /retell/***/call_9" 403'
    )
    assert redact("/retell/call_9 accepted") == "/retell/call_9 accepted"
    assert redact("Authorization: Bearer abc.def.ghi") == "Authorization: Bearer ***"


async def test_no_secret_in_the_log_of_a_session_on_every_route() -> None:
    port = free_port()
    env = {
        "GATEWAY_STORE": "memory://",
        "GATEWAY_OFFLINE_DELAY_MS": "0",
        "GATEWAY_API_KEYS": f"alice:{API_KEY}",
        "GATEWAY_ADMIN_KEYS": f"ops:{ADMIN_KEY}",
        "RETELL_SECRET": RETELL_SECRET,
        "OPENAI_COMPAT_API_KEYS": OPENAI_KEY,
        "LAYERCODE_WEBHOOK_SECRET": LAYERCODE_SECRET,
    }
    base = f"127.0.0.1:{port}"
    with gateway_process("--port", str(port), **env) as (_, lines):
        client = await Client.connect(f"ws://{base}/ws?%74oken={API_KEY}")
        ready = await client.ready()
        await client.send(PIN)
        await client.turn()
        await client.ws.close()
        token = ready["resume_token"]
        resume = (
            f"ws://{base}/ws?token={API_KEY}&session_id={ready['session_id']}"
            f"&resume%5Ftoken={token}&last_seq=0"
        )
        async with await Client.connect(resume) as again:
            await again.ready()
        by_proto = await Client.connect(f"ws://{base}/ws", subprotocols=[f"bearer.{API_KEY}"])
        await by_proto.ready()
        await by_proto.ws.close()
        async with await Client.connect(f"ws://{base}/retell/{RETELL_SECRET}/call_1") as call:
            await call.recv()
            await call.recv()
        async with await Client.connect(f"ws://{base}/twilio") as relay:
            await relay.send({"type": "setup", "callSid": "CA1"})
            await relay.send({"type": "prompt", "voicePrompt": PIN, "last": True})
            await relay.recv_until(lambda f: f["type"] == "text" and f["last"])
        async with httpx.AsyncClient(base_url=f"http://{base}") as http:
            assert (await http.get(f"/sessions?%74oken={ADMIN_KEY}")).status_code == 200
            assert (await http.get(f"/sessions?api%5Fkey={API_KEY}")).status_code == 401
            completion = await http.post(
                f"/v1/chat/completions?key={OPENAI_KEY}",
                headers={"Authorization": f"Bearer {OPENAI_KEY}"},
                json={"messages": [{"role": "user", "content": PIN}]},
            )
            assert completion.status_code == 200
            body = orjson.dumps({"type": "session.end", "conversation_id": "c1", "turn_id": "t"})
            signature = layercode_signature(LAYERCODE_SECRET, body, int(time.time()))
            await http.post(
                f"/layercode/agent?signature={signature}",
                content=body,
                headers={"layercode-signature": signature, "content-type": "application/json"},
            )
    log = "".join(lines)
    assert '"WebSocket /retell/***/call_1"' in log, "the Retell access line should be there"
    assert "resume%5Ftoken=***" in log
    for secret in (API_KEY, ADMIN_KEY, RETELL_SECRET, OPENAI_KEY, LAYERCODE_SECRET, token, "4921"):
        assert secret not in log, f"{secret!r} leaked into the log"


def test_the_filter_masks_arguments_and_tracebacks_for_any_formatter() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "to %s", ("/ws?token=K9",), None)
    try:
        raise ValueError("bad url /retell/s3cr3t/call_1?resume_token=K8")
    except ValueError:
        record.exc_info = sys.exc_info()
    RedactSecrets().filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert "K9" not in text
    assert "K8" not in text
    assert "s3cr3t" not in text
    assert "/retell/***/call_1" in text
