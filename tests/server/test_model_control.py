"""Model control over a real gateway and the real google-genai SDK against the fake
Gemini: honest endings, the fallback line, usage totals, the token budget, the
generation settings and the history cut as they reach the wire."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini, finish_event, text_event
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

USAGE = {"promptTokenCount": 40, "candidatesTokenCount": 8, "totalTokenCount": 60}


def gemini(start_gateway: GatewayFactory, fake: FakeGemini, **env: Any) -> RunningServer:
    env = {"GATEWAY_PROVIDER_BACKOFF_S": 0, **env}
    return start_gateway(GEMINI_API_KEY="k", GEMINI_BASE_URL=fake.url, **env)


def errors(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "error"]


def spoken(events: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in events if e["type"] == "response.tts"]


async def test_blocked_empty_and_cut_replies_are_reported_for_what_they_are(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini)
    fake_gemini.reply_events([finish_event("MODEL_ARMOR")])
    fake_gemini.reply_events([text_event("", finish_reason="STOP")])
    fake_gemini.reply_chunks(
        ["The first part is", " long enough to speak, and then"], finish_reason="MAX_TOKENS"
    )
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("Say something forbidden")
        blocked = await client.turn()
        await client.send("Say nothing")
        empty = await client.turn()
        await client.send("Say a lot")
        cut = await client.turn()

    (error,) = errors(blocked)
    assert (error["code"], error["detail"], error["retryable"]) == (
        "provider_error",
        "blocked",
        False,
    )
    assert (blocked[-1]["status"], blocked[-1]["reason"]) == ("failed", "blocked")
    (error,) = errors(empty)
    assert error["detail"] == "empty_reply"
    assert empty[-1]["status"] == "failed"
    assert errors(cut) == []
    assert (cut[-1]["status"], cut[-1]["reason"]) == ("completed", "max_tokens")
    assert "".join(spoken(cut)).startswith("The first part is long enough")


async def test_a_bad_key_says_so_and_the_fallback_line_fills_the_silence(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(
        start_gateway,
        fake_gemini,
        GATEWAY_LANGUAGE="es",
        GATEWAY_FALLBACK_TEXT='{"en": "Sorry, say that again?", "es": "Perdón, ¿puede repetir?"}',
    )
    fake_gemini.bad_key()
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("Hola")
        events = await client.turn()

    (error,) = errors(events)
    assert (error["detail"], error["retryable"]) == ("auth_failed", False)
    assert "check GEMINI_API_KEY" in error["message"]
    assert spoken(events) == ["Perdón, ¿puede repetir?"]
    assert events[-1]["status"] == "failed"
    assert len(fake_gemini.requests) == 1  # not retried


async def test_usage_is_counted_per_turn_and_session_and_the_budget_refuses_more(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini, GATEWAY_MAX_SESSION_TOKENS=100)
    for text in ("One.", "Two."):
        fake_gemini.reply_events(
            [{**text_event(text, finish_reason="STOP"), "usageMetadata": USAGE}]
        )
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        ready = await client.ready()
        await client.send("first")
        first = await client.turn()
        await client.send("second")
        second = await client.turn()
        await client.send({"type": "user.message", "text": "third", "id": "u3"})
        (refused,) = await client.recv_type("error")
        await client.send({"type": "ping", "id": 1})
        assert (await client.recv())["type"] == "pong"  # and no turn started
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        session = (await http.get(f"/sessions/{ready['session_id']}")).json()

    expected = {
        "input_tokens": 40,
        "output_tokens": 8,
        "total_tokens": 60,
        "cached_tokens": None,
        "thinking_tokens": None,
    }
    assert first[-1]["usage"] == expected
    assert second[-1]["usage"] == expected
    assert refused["code"] == "token_budget_exhausted"
    assert session["usage"] == {
        **expected,
        "input_tokens": 80,
        "output_tokens": 16,
        "total_tokens": 120,
    }
    assert len(session["turns"]) == 2
    assert len(fake_gemini.requests) == 2


async def test_generation_settings_from_settings_and_session_update_reach_gemini(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(
        start_gateway, fake_gemini, GATEWAY_TEMPERATURE=0.5, GATEWAY_MAX_OUTPUT_TOKENS=200
    )
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("one")
        await client.turn()
        await client.send({"type": "session.update", "temperature": 0, "thinking_level": "low"})
        (updated,) = await client.recv_type("session.updated")
        await client.send("two")
        await client.turn()

    one, two = (r.body["generationConfig"] for r in fake_gemini.wait_for_requests(2))
    assert (one["temperature"], one["maxOutputTokens"]) == (0.5, 200)
    assert two["temperature"] == 0
    assert two["thinkingConfig"] == {"thinking_level": "LOW"}
    assert updated["generation"] == {
        "temperature": 0.0,
        "max_output_tokens": 200,
        "thinking_level": "low",
        "thinking_budget": None,
    }


async def test_the_model_sees_a_bounded_history_and_the_store_keeps_it_all(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = gemini(start_gateway, fake_gemini, GATEWAY_MAX_HISTORY_MESSAGES=3)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        ready = await client.ready()
        for i in range(4):
            await client.send(f"question {i}")
            await client.turn()
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        session = (await http.get(f"/sessions/{ready['session_id']}")).json()

    last = fake_gemini.wait_for_requests(4)[-1]
    assert [role for role, _ in last.turns] == ["user", "model", "user"]
    assert last.turns[0][1] == ["question 2"]
    assert last.last_user_text == "question 3"
    assert [t["user_text"] for t in session["turns"]] == [f"question {i}" for i in range(4)]
