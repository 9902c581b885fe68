"""Pick a session store from a URL (the ``GATEWAY_STORE`` setting).

* ``memory://``: :class:`~gateway.stores.memory.MemoryStore`, nothing survives a restart.
* ``sqlite:///relative/path.db``: a file relative to the working directory (three
  slashes, as in SQLAlchemy); ``sqlite:////abs/path.db``: an absolute path (four).
* ``sqlite://`` or ``sqlite:///:memory:``: a private in-memory SQLite database (tests).
* ``redis://[:password@]host:port/db`` or ``rediss://…`` (TLS):
  :class:`~gateway.stores.redis.RedisStore`, the distributed mode (several instances).
"""

from __future__ import annotations

from gateway.cluster import Cluster
from gateway.cluster_local import LocalCluster
from gateway.stores.base import SessionStore
from gateway.stores.memory import MemoryStore
from gateway.stores.redis import DEFAULT_MAX_EVENTS, DEFAULT_TTL_S, RedisStore
from gateway.stores.redis_cluster import RedisCluster
from gateway.stores.sqlite import MEMORY_PATH, SqliteStore

SUPPORTED = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "redis://host:port/db or rediss://host:port/db"
)


def _unsupported(why: str) -> ValueError:
    return ValueError(f"GATEWAY_STORE: {why}; supported: {SUPPORTED}")


def _build(url: str, ttl_s: float, max_events: int) -> MemoryStore | SqliteStore | RedisStore:
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
    if scheme in ("redis", "rediss"):
        if not rest or rest.startswith("/"):
            raise _unsupported(f"{scheme}:// needs a host: {scheme}://host:6379/0")
        return RedisStore(url, ttl_s=ttl_s, max_events=max_events)
    # Only the scheme is echoed: the rest of a URL may hold a password.
    raise _unsupported(f"unsupported scheme {scheme!r}")


def store_from_url(
    url: str, *, ttl_s: float = DEFAULT_TTL_S, max_events: int = DEFAULT_MAX_EVENTS
) -> SessionStore:
    """The store ``url`` names, not yet opened (no I/O); ``ValueError`` if unsupported.

    ``ttl_s`` (the session TTL) and ``max_events`` (the replay window) bound what a
    Redis store keeps: every key expires ``ttl_s`` after its last commit and the event
    stream holds about ``max_events``; the other backends rely on the sweeper and
    ``trim_events``.
    """
    return _build(url, ttl_s, max_events)


def is_distributed(url: str) -> bool:
    """Whether ``url`` names a store several gateway processes may share (Redis)."""
    return url.partition("://")[0].lower() in ("redis", "rediss")


async def open_store(
    url: str, *, ttl_s: float = DEFAULT_TTL_S, max_events: int = DEFAULT_MAX_EVENTS
) -> SessionStore:
    """The store ``url`` names, opened and ready; ``StoreError`` if it cannot open."""
    store = _build(url, ttl_s, max_events)
    await store.open()
    return store


def cluster_for(store: SessionStore, *, instance_ttl_s: float) -> Cluster:
    """The :class:`~gateway.cluster.Cluster` that goes with ``store``: on Redis the
    instances share it, otherwise it is this process alone."""
    if isinstance(store, RedisStore):
        return RedisCluster(store, instance_ttl_s=instance_ttl_s)
    return LocalCluster(store)
