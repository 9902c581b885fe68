"""Bounded log of the server events a session sent, by ``seq``, for resume.

Shaped as append / read-since / tail so that a store (SQLite, Redis Streams) can
hold the same log across restarts and instances.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from gateway.core.events import ServerEvent


class ReplayLog:
    """The last ``capacity`` events, in ``seq`` order."""

    def __init__(self, capacity: int = 1024, events: Iterable[ServerEvent] = ()) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._events: deque[ServerEvent] = deque(events, maxlen=capacity)

    def __len__(self) -> int:
        return len(self._events)

    @property
    def first_seq(self) -> int | None:
        """The oldest ``seq`` still held, or ``None`` when empty."""
        return self._events[0].seq if self._events else None

    @property
    def last_seq(self) -> int:
        """The newest ``seq`` held, 0 when empty."""
        return self._events[-1].seq if self._events else 0

    def append(self, event: ServerEvent) -> None:
        """Add the next event; its ``seq`` must follow the last one."""
        if self._events and event.seq != self._events[-1].seq + 1:
            raise ValueError(f"seq {event.seq} does not follow {self._events[-1].seq}")
        self._events.append(event)

    def since(self, seq: int) -> list[ServerEvent] | None:
        """Every event with ``seq`` greater than ``seq``, or ``None`` if some were dropped."""
        if seq >= self.last_seq:
            return []
        first = self.first_seq
        if first is None or seq + 1 < first:
            return None
        start = seq + 1 - first
        return [self._events[i] for i in range(start, len(self._events))]

    def tail(self, n: int) -> list[ServerEvent]:
        """The newest ``n`` events."""
        if n <= 0:
            return []
        return list(self._events)[-n:]
