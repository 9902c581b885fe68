"""``voice-gateway check`` and the opt-in start-up check, as users run them: real
processes against the fake Gemini and OpenAI servers."""

from __future__ import annotations

import subprocess
import sys

from tests.support.fake_gemini import FakeGemini
from tests.support.fake_openai import FakeOpenAI
from tests.support.process import STARTUP_TIMEOUT_S, clean_env, free_port, gateway_process

GEMINI_KEY = "AIza-check-secret-0123456789"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=clean_env(GATEWAY_STORE="memory://", **env),
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_S,
        check=False,
    )


def test_check_passes_with_a_good_key_and_model(fake_gemini: FakeGemini) -> None:
    result = run(
        "check", GEMINI_API_KEY=GEMINI_KEY, GEMINI_BASE_URL=fake_gemini.url, GEMINI_MODEL="gm-1"
    )

    assert result.returncode == 0, result.stderr
    assert "OK: gemini model gm-1 answered" in result.stdout
    [sent] = fake_gemini.requests
    assert sent.body["generationConfig"]["maxOutputTokens"] == 16  # one small request


def test_check_says_the_key_is_wrong(fake_gemini: FakeGemini) -> None:
    fake_gemini.bad_key()

    result = run("check", GEMINI_API_KEY=GEMINI_KEY, GEMINI_BASE_URL=fake_gemini.url)

    assert result.returncode == 1
    assert "check FAILED" in result.stderr
    assert "check GEMINI_API_KEY" in result.stderr
    assert "auth_failed" in result.stderr
    assert GEMINI_KEY not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_check_says_the_model_is_wrong_on_openai(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail(404, "The model `gpt-nope` does not exist", code="model_not_found")

    result = run(
        "check",
        GATEWAY_PROVIDER="openai",
        OPENAI_API_KEY="sk-x",
        OPENAI_BASE_URL=fake_openai.url,
        OPENAI_MODEL="gpt-nope",
    )

    assert result.returncode == 1
    assert "model_not_found" in result.stderr
    assert "check OPENAI_MODEL" in result.stderr


def test_check_on_the_offline_provider_has_nothing_to_check() -> None:
    result = run("check")
    assert result.returncode == 0
    assert "offline provider needs no check" in result.stdout


def test_the_start_up_check_keeps_a_gateway_with_a_bad_key_from_serving(
    fake_gemini: FakeGemini,
) -> None:
    fake_gemini.bad_key()

    result = run(
        "--port",
        str(free_port()),
        GEMINI_API_KEY=GEMINI_KEY,
        GEMINI_BASE_URL=fake_gemini.url,
        GATEWAY_CHECK_PROVIDER="true",
    )

    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "provider check failed, not starting" in log
    assert "check GEMINI_API_KEY" in log
    assert "Uvicorn running on" not in log
    assert GEMINI_KEY not in log


def test_the_start_up_check_lets_a_good_gateway_serve(fake_gemini: FakeGemini) -> None:
    port = free_port()
    with gateway_process(
        "--port",
        str(port),
        GEMINI_API_KEY=GEMINI_KEY,
        GEMINI_BASE_URL=fake_gemini.url,
        GATEWAY_CHECK_PROVIDER="true",
        GATEWAY_STORE="memory://",
    ) as (_, lines):
        log = "".join(lines)
    assert "provider check: OK: gemini" in log
    assert len(fake_gemini.requests) == 1
