"""GATEWAY_PROVIDER=openai end to end: the real gateway on the real openai SDK,
against the fake OpenAI-compatible server, through /ws, an adapter and the
OpenAI-compatible route; and which provider the settings choose."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.providers.factory import PROVIDERS, build_provider
from gateway.settings import Settings, SettingsError, load_settings
from tests.support.client import Client
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

KEY = "sk-test-not-secret"


def openai_gateway(start_gateway: GatewayFactory, fake: FakeOpenAI, **env: Any) -> RunningServer:
    env = {"GATEWAY_PROVIDER_BACKOFF_S": 0, **env}
    return start_gateway(
        GATEWAY_PROVIDER="openai",
        OPENAI_API_KEY=KEY,
        OPENAI_BASE_URL=fake.url,
        OPENAI_MODEL="llama-3.3-70b-versatile",
        GATEWAY_INSTRUCTIONS="You are a helpful voice assistant.",
        **env,
    )


async def test_ws_sessions_run_on_an_openai_compatible_server(
    start_gateway: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = openai_gateway(start_gateway, fake_openai)
    fake_openai.reply(["Hello there. ", "How can I help ", "you today?"], usage=(30, 9))
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        ready = await client.ready()
        await client.send("Hi")
        first = await client.turn()
        await client.send("Again")
        second = await client.turn()

    assert (ready["provider"], ready["model"]) == ("openai", "llama-3.3-70b-versatile")
    assert [e["text"] for e in first if e["type"] == "response.tts"] == [
        "Hello there.",
        "How can I help you today?",
    ]
    assert first[-1]["status"] == "completed"
    assert first[-1]["usage"]["total_tokens"] == 39
    assert second[-1]["text"] == "You said: Again. That is all."
    one, two = fake_openai.wait_for_requests(2)
    assert one.body["messages"] == [
        {"role": "system", "content": "You are a helpful voice assistant."},
        {"role": "user", "content": "Hi"},
    ]
    assert two.roles == ["system", "user", "assistant", "user"]


async def test_a_bad_key_on_openai_says_to_check_it_and_is_not_retried(
    start_gateway: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = openai_gateway(start_gateway, fake_openai)
    fake_openai.fail(401, "Incorrect API key provided", code="invalid_api_key")
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("Hi")
        events = await client.turn()

    (error,) = [e for e in events if e["type"] == "error"]
    assert (error["detail"], error["retryable"]) == ("auth_failed", False)
    assert "check OPENAI_API_KEY" in error["message"]
    assert len(fake_openai.requests) == 1


async def test_retryable_openai_errors_are_retried_before_the_first_chunk_only(
    start_gateway: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = openai_gateway(start_gateway, fake_openai, GATEWAY_PROVIDER_RETRIES=2)
    fake_openai.fail(429)
    fake_openai.fail(503)
    fake_openai.reply(["Third time lucky."])
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("Hi")
        events = await client.turn()

    assert events[-1]["status"] == "completed"
    assert not [e for e in events if e["type"] == "error"]
    assert len(fake_openai.requests) == 3


async def test_a_content_filter_ends_the_turn_blocked(
    start_gateway: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = openai_gateway(start_gateway, fake_openai)
    fake_openai.reply([], finish_reason="content_filter")
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("Something forbidden")
        events = await client.turn()

    (error,) = [e for e in events if e["type"] == "error"]
    assert error["detail"] == "blocked"
    assert (events[-1]["status"], events[-1]["reason"]) == ("failed", "blocked")


async def test_the_twilio_adapter_and_the_openai_route_run_on_it_too(
    start_gateway: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = openai_gateway(start_gateway, fake_openai)
    async with await Client.connect(f"{gateway.ws_url}/twilio") as call:
        await call.send({"type": "setup", "callSid": "CA1", "from": "+1", "to": "+2"})
        await call.send({"type": "prompt", "voicePrompt": "Hello", "lang": "en-US", "last": True})
        frames = await call.recv_until(lambda f: f["type"] == "text" and f["last"])
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "Ping"}]},
        )

    assert "".join(f["token"] for f in frames).strip() == "You said: Hello. That is all."
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "You said: Ping. That is all."
    assert response.json()["usage"]["total_tokens"] == 15


# -- which provider -------------------------------------------------------------------


def settings(**env: Any) -> Settings:
    return Settings(_env_file=None, **env)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({}, "offline"),
        ({"OPENAI_API_KEY": KEY}, "openai"),
        ({"GEMINI_API_KEY": "g"}, "gemini"),
        ({"GEMINI_API_KEY": "g", "OPENAI_API_KEY": KEY}, "gemini"),
        ({"GEMINI_API_KEY": "g", "OPENAI_API_KEY": KEY, "GATEWAY_PROVIDER": "openai"}, "openai"),
        ({"GEMINI_API_KEY": "g", "GATEWAY_PROVIDER": "Offline"}, "offline"),
        ({"GATEWAY_PROVIDER": "openai", "OPENAI_BASE_URL": "http://localhost:11434/v1"}, "openai"),
    ],
)
async def test_the_default_provider_follows_the_keys_that_are_set(
    env: dict[str, str], name: str
) -> None:
    chosen = settings(**env)
    provider = build_provider(chosen)
    try:
        assert (chosen.provider_name, provider.name) == (name, name)
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"GATEWAY_PROVIDER": "claude"}, "GATEWAY_PROVIDER: use one of gemini, openai, offline"),
        ({"GATEWAY_PROVIDER": "gemini"}, "GATEWAY_PROVIDER=gemini needs GEMINI_API_KEY"),
        ({"GATEWAY_PROVIDER": "openai"}, "GATEWAY_PROVIDER=openai needs OPENAI_API_KEY"),
        ({"GATEWAY_FALLBACK_TEXT": '{"en": ""}'}, "GATEWAY_FALLBACK_TEXT"),
        (
            {"GEMINI_THINKING_LEVEL": "low", "GEMINI_THINKING_BUDGET": "0"},
            "GEMINI_THINKING_LEVEL or GEMINI_THINKING_BUDGET",
        ),
        ({"GEMINI_THINKING_LEVEL": "huge"}, "GEMINI_THINKING_LEVEL"),
        ({"GATEWAY_TEMPERATURE": "5"}, "GATEWAY_TEMPERATURE"),
    ],
)
def test_wrong_provider_settings_say_what_to_fix(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=says):
        load_settings(_env_file=None)


def test_every_registered_provider_is_a_module_with_from_settings() -> None:
    import importlib

    for module in PROVIDERS.values():
        assert callable(importlib.import_module(module).from_settings)
