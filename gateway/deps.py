"""Where request handlers find the parts the lifespan built once."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from gateway.sessions import SessionManager
from gateway.stores.base import SessionStore


def manager_of(conn: HTTPConnection) -> SessionManager:
    """The application's session manager."""
    manager: SessionManager = conn.app.state.manager
    return manager


def store_of(conn: HTTPConnection) -> SessionStore:
    """The application's session store."""
    store: SessionStore = conn.app.state.store
    return store
