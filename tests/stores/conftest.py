"""Fixtures for the store tests: one ``store`` per backend, opened and closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.budgets import CappedStore
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


#: Store wrappers the gateway puts around a backend, by the backend they wrap
#: (with budgets too large to bind: the contract must hold through them).
WRAPPED: dict[str, str] = {"sqlite+budgets": "sqlite"}


@pytest.fixture(params=[*BACKEND_URLS, *WRAPPED])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    """An open, empty store of each backend in turn."""
    backend = WRAPPED.get(request.param, request.param)
    url = BACKEND_URLS[backend]
    redis = request.getfixturevalue("redis_url") if "{redis}" in url else ""
    opened: SessionStore = await open_store(url.format(tmp=tmp_path, redis=redis))
    if request.param in WRAPPED:
        opened = CappedStore(
            opened, max_sessions=10**9, count=0, log_events=10**9, log_chars=10**12
        )
    try:
        yield opened
    finally:
        await opened.aclose()
