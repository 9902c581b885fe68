"""Fixtures for the store tests: one ``store`` per backend, opened and closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.stores.base import SessionStore
from gateway.stores.factory import open_store

# Every backend the contract suite runs against, by the URL that opens it; ``{tmp}``
# is the test's temporary directory, ``{redis}`` the URL of the test run's real
# redis-server (flushed before each test). A new backend is one more entry here.
BACKEND_URLS: dict[str, str] = {
    "memory": "memory://",
    "sqlite": "sqlite:///{tmp}/store.db",
    "redis": "{redis}",
}


@pytest.fixture(params=list(BACKEND_URLS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    """An open, empty store of each backend in turn."""
    url = BACKEND_URLS[request.param]
    redis = request.getfixturevalue("redis_url") if "{redis}" in url else ""
    opened = await open_store(url.format(tmp=tmp_path, redis=redis))
    try:
        yield opened
    finally:
        await opened.aclose()
