"""Pick a session store from a URL (the ``GATEWAY_STORE`` setting).

* ``memory://``: :class:`~gateway.stores.memory.MemoryStore`, nothing survives a restart.
* ``sqlite:///relative/path.db``: a file relative to the working directory (three
  slashes, as in SQLAlchemy); ``sqlite:////abs/path.db``: an absolute path (four).
* ``sqlite://`` or ``sqlite:///:memory:``: a private in-memory SQLite database (tests).
"""

from __future__ import annotations

from gateway.stores.base import SessionStore
from gateway.stores.memory import MemoryStore
from gateway.stores.sqlite import MEMORY_PATH, SqliteStore

SUPPORTED = "memory://, sqlite:///relative/path.db or sqlite:////absolute/path.db"


def _unsupported(why: str) -> ValueError:
    return ValueError(f"GATEWAY_STORE: {why}; supported: {SUPPORTED}")


def _build(url: str) -> MemoryStore | SqliteStore:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise _unsupported("not a URL (expected scheme://...)")
    scheme = scheme.lower()
    if scheme == "memory":
        if rest:
            raise _unsupported("memory:// takes no path")
        return MemoryStore()
    if scheme == "sqlite":
        if rest in ("", "/:memory:", ":memory:"):
            return SqliteStore(MEMORY_PATH)
        if not rest.startswith("/"):
            raise _unsupported("a sqlite URL has no host: use sqlite:///path.db")
        path = rest[1:]
        if "?" in path or "#" in path:
            raise _unsupported("sqlite URLs take no query or fragment")
        return SqliteStore(path)
    # Only the scheme is echoed: the rest of a URL may hold a password.
    raise _unsupported(f"unsupported scheme {scheme!r}")


def store_from_url(url: str) -> SessionStore:
    """The store ``url`` names, not yet opened (no I/O); ``ValueError`` if unsupported."""
    return _build(url)


async def open_store(url: str) -> SessionStore:
    """The store ``url`` names, opened and ready; ``StoreError`` if it cannot open."""
    store = _build(url)
    await store.open()
    return store
