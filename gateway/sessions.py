"""Live sessions of this process: made on connect, released on disconnect."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

from gateway.core.session import Session, SessionConfig
from gateway.providers.base import LLMProvider
from gateway.runtime import SessionRuntime


def new_session_id() -> str:
    """A random, URL-safe session id."""
    return "s_" + secrets.token_urlsafe(12)


def new_resume_token() -> str:
    """A random secret a client presents to resume its session."""
    return secrets.token_urlsafe(32)


class SessionManager:
    """Makes session runtimes and keeps the live ones, for shutdown and lookups."""

    def __init__(
        self,
        provider: LLMProvider,
        config: SessionConfig,
        tasks: asyncio.TaskGroup,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._config = config
        self._tasks = tasks
        self._clock = clock
        self._live: dict[str, SessionRuntime] = {}

    def __len__(self) -> int:
        return len(self._live)

    def get(self, session_id: str) -> SessionRuntime | None:
        return self._live.get(session_id)

    def create(self) -> SessionRuntime:
        """A new session with empty history."""
        session = Session(new_session_id(), new_resume_token(), self._config)
        runtime = SessionRuntime(session, self._provider, self._tasks, self._clock)
        self._live[session.id] = runtime
        return runtime

    def release(self, runtime: SessionRuntime) -> None:
        """The client left: stop its turn and forget the session."""
        runtime.disconnected()
        self._live.pop(runtime.session.id, None)

    def shutdown(self) -> None:
        """Cancel every provider stream; called when the server stops."""
        for runtime in self._live.values():
            runtime.cancel_all()
        self._live.clear()
