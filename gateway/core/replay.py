"""Bounded in-memory log of the server events a session sent, by ``seq``.

It holds each event as it went on the wire, so a resuming client is answered
from memory without re-encoding. Shaped as append / read-since / tail, like the
stores' event log that backs it across restarts and instances.

The log keeps each event as a plain tuple of its fields and makes the
:class:`LoggedEvent` again when it is read. CPython's cyclic collector stops
tracking a tuple of strings and ints the first time it survives a collection, while
it walks every instance of a class on every full collection: a session's 1,024
logged events were 1,024 more objects in each pause of every session's event loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One server event as sent: its ``seq``, ``type``, ``turn_id`` and JSON text."""

    seq: int
    type: str
    turn_id: str | None
    data: str


_Row = tuple[int, str, str | None, str]

#: The most text a session's replay log holds in memory (about 4 MiB of JSON):
#: without it, 1024 large events (``session.updated`` repeating long
#: instructions) would hold many megabytes per session.
DEFAULT_MAX_CHARS = 4 * 1024 * 1024


class ReplayLog:
    """The last ``capacity`` events, in ``seq`` order, without gaps, and no more of
    them than fit in ``max_chars`` characters of JSON (the newest one always stays)."""

    def __init__(
        self,
        capacity: int = 1024,
        events: Iterable[LoggedEvent] = (),
        *,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._max_chars = max_chars
        self._chars = 0
        #: Made by the first event: a fresh session's log stays empty until its first
        #: turn, and an empty deque is 760 bytes. ``(seq, type, turn_id, data)`` each.
        self._events: deque[_Row] | None = None
        for event in events:
            self.append(event)

    def __len__(self) -> int:
        return 0 if self._events is None else len(self._events)

    @property
    def capacity(self) -> int:
        """How many events the log keeps (at most)."""
        return self._capacity

    @property
    def chars(self) -> int:
        """The characters of JSON the log holds now."""
        return self._chars

    @property
    def first_seq(self) -> int | None:
        """The oldest ``seq`` still held, or ``None`` when empty."""
        return self._events[0][0] if self._events else None

    @property
    def last_seq(self) -> int:
        """The newest ``seq`` held, 0 when empty."""
        return self._events[-1][0] if self._events else 0

    def append(self, event: LoggedEvent) -> None:
        """Add the next event; its ``seq`` must follow the last one."""
        events = self._events
        if events is None:
            events = self._events = deque()
        elif events and event.seq != events[-1][0] + 1:
            raise ValueError(f"seq {event.seq} does not follow {events[-1][0]}")
        events.append((event.seq, event.type, event.turn_id, event.data))
        self._chars += len(event.data)
        while len(events) > 1 and (len(events) > self._capacity or self._chars > self._max_chars):
            self._chars -= len(events.popleft()[3])

    def since(self, seq: int, upto: int | None = None) -> list[LoggedEvent] | None:
        """Events with ``seq < s <= upto`` (default: all newer), or ``None`` if some
        of them were already dropped from the log."""
        upto = self.last_seq if upto is None else min(upto, self.last_seq)
        if seq >= upto:
            return []
        events, first = self._events, self.first_seq
        if events is None or first is None or seq + 1 < first:
            return None
        return [LoggedEvent(*events[i]) for i in range(seq + 1 - first, upto + 1 - first)]

    def tail(self, n: int) -> list[LoggedEvent]:
        """The newest ``n`` events."""
        if n <= 0 or self._events is None:
            return []
        return [LoggedEvent(*row) for row in list(self._events)[-n:]]
