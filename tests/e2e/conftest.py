"""Fixtures for the browser tests: Debian's Chromium driven by Playwright (async API).

The browser is launched once per test module, in the module's event loop (so the
tests in tests/e2e run with ``loop_scope="module"``); each test gets fresh browser
contexts, so storage never leaks between tests. Every page gets the init script
in stubs.js (speech and microphone stand-ins, a record of WebSocket traffic), and
a test fails when its page logged a console error or threw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from tests.e2e.helpers import CHROMIUM, CHROMIUM_ARGS, OpenUi
from tests.e2e.proxy import TcpProxy, proxying
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; the tests fail (never skip) without it."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
            "(apt-get install chromium); they never download a browser."
        )
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def open_ui(browser: Browser) -> AsyncIterator[OpenUi]:
    opener = OpenUi(browser)
    yield opener
    problems = await opener.close()
    assert problems == [], "the page logged errors:\n" + "\n".join(problems)


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> RunningServer:
    """An offline gateway that streams at once."""
    return start_gateway(GATEWAY_OFFLINE_DELAY_MS=0)


@pytest.fixture
def slow_gateway(start_gateway: GatewayFactory) -> RunningServer:
    """An offline gateway that streams a token (4 characters) every 40 ms."""
    return start_gateway(GATEWAY_OFFLINE_DELAY_MS=40)


@pytest.fixture
def proxy(slow_gateway: RunningServer) -> Iterator[TcpProxy]:
    """A TCP proxy in front of ``slow_gateway`` that tests can cut."""
    with proxying(slow_gateway.host, slow_gateway.port) as running:
        yield running
