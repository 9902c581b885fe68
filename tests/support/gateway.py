"""Fixtures that run the real gateway under uvicorn on a free port (a pytest plugin)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app, uvicorn_options
from gateway.settings import Settings
from tests.support.fake_gemini import FakeGemini
from tests.support.servers import RunningServer, running

GatewayFactory = Callable[..., RunningServer]
#: The admin key every test gateway accepts (it reads platform sessions).
ADMIN_KEY = "test-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
#: Settings the tests must never inherit from the developer's environment.
ENV_PREFIXES = (
    "GEMINI_",
    "GATEWAY_",
    "GOOGLE_GENAI_",
    "TWILIO_",
    "RETELL_",
    "LAYERCODE_",
    "OPENAI_",
    "OTEL_",
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the settings they pass, never the developer's own keys."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES) or name in (
            "GOOGLE_API_KEY",
            "PORT",
            "FORWARDED_ALLOW_IPS",
        ):
            monkeypatch.delenv(name)


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start a gateway with settings given by their environment names, e.g. GATEWAY_LANGUAGE.

    Sessions go to a real SQLite file in the test's temporary directory, one file
    per gateway (SQLite allows one gateway per file), unless GATEWAY_STORE says
    otherwise.
    """
    with ExitStack() as stack:
        started = 0

        def start(**env: Any) -> RunningServer:
            nonlocal started
            started += 1
            name = "sessions.db" if started == 1 else f"sessions-{started}.db"
            env.setdefault("GATEWAY_STORE", f"sqlite:///{tmp_path / name}")
            env.setdefault("GATEWAY_ADMIN_KEYS", f"ops:{ADMIN_KEY}")
            settings = Settings(_env_file=None, **env)
            app = create_app(settings)
            return stack.enter_context(running(app, **uvicorn_options(settings)))

        yield start


@pytest.fixture
def offline_gateway(start_gateway: GatewayFactory) -> RunningServer:
    """A gateway on the offline provider, streaming without delay."""
    return start_gateway(GATEWAY_OFFLINE_DELAY_MS=0)


@pytest.fixture
def gemini_gateway(start_gateway: GatewayFactory, fake_gemini: FakeGemini) -> RunningServer:
    """A gateway on the real google-genai SDK, talking to the fake Gemini server."""
    return start_gateway(
        GEMINI_API_KEY="test-key-not-secret",
        GEMINI_BASE_URL=fake_gemini.url,
        GEMINI_MODEL="gemini-test",
        GATEWAY_INSTRUCTIONS="You are a helpful voice assistant.",
    )
