"""Lifecycle states of the shell's objects, each drawn as one transition table.

A session runtime::

    DETACHED ──attach──▶ ATTACHED ──detach──▶ DETACHED (grace timer armed)
        │  ▲               │  └─attach (takeover)─┘
        │  └──attach───────┘
        ├──stop / grace expired──▶ STOPPING ──pipeline done──▶ STOPPED
    ATTACHED ──stop──▶ STOPPING

A runtime is born DETACHED, with its grace timer running, so a runtime nobody
attaches to is never left behind. A connection::

    OPEN ──close / abort / peer left──▶ CLOSING ──socket done──▶ CLOSED
    OPEN ──peer left──▶ CLOSED

:class:`Lifecycle` holds one state and moves it only along its table; any other
move raises :class:`~gateway.errors.InvalidTransition`, so a race shows up as a
loud bug instead of a quiet wrong state.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Generic, TypeVar

from gateway.errors import InvalidTransition

S = TypeVar("S", bound=StrEnum)


class RuntimeState(StrEnum):
    """Where a session runtime is in its life."""

    DETACHED = "detached"
    ATTACHED = "attached"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ConnectionState(StrEnum):
    """Where a client connection is in its life."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


RUNTIME_TRANSITIONS: Mapping[RuntimeState, frozenset[RuntimeState]] = {
    RuntimeState.DETACHED: frozenset({RuntimeState.ATTACHED, RuntimeState.STOPPING}),
    RuntimeState.ATTACHED: frozenset(
        {RuntimeState.ATTACHED, RuntimeState.DETACHED, RuntimeState.STOPPING}
    ),
    RuntimeState.STOPPING: frozenset({RuntimeState.STOPPED}),
    RuntimeState.STOPPED: frozenset(),
}

CONNECTION_TRANSITIONS: Mapping[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.OPEN: frozenset({ConnectionState.CLOSING, ConnectionState.CLOSED}),
    ConnectionState.CLOSING: frozenset({ConnectionState.CLOSED}),
    ConnectionState.CLOSED: frozenset(),
}


class Lifecycle(Generic[S]):
    """One state, moved only along ``table``."""

    __slots__ = ("_name", "_state", "_table")

    def __init__(self, name: str, initial: S, table: Mapping[S, frozenset[S]]) -> None:
        self._name = name
        self._state = initial
        self._table = table

    @property
    def state(self) -> S:
        return self._state

    def can(self, new: S) -> bool:
        """Whether ``new`` is reachable from here in one step."""
        return new in self._table[self._state]

    def move(self, new: S) -> S:
        """Go to ``new``; returns the state left. Raises ``InvalidTransition``."""
        old = self._state
        if new not in self._table[old]:
            raise InvalidTransition(f"{self._name}: {old} -> {new} is not a transition")
        self._state = new
        return old

    def __repr__(self) -> str:
        return f"<{self._name} {self._state}>"
