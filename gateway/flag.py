"""A set/clear flag that tasks can wait on: :class:`asyncio.Event` at a tenth of its size.

Every ``asyncio.Event`` allocates a ``collections.deque`` for its waiters when it
is made (about 760 bytes), and an idle session had seven of them, almost never
waited on by more than one task. :class:`Flag` keeps the same semantics
(``set`` wakes every waiter, ``clear`` wakes none, a cancelled waiter leaves
quietly) and holds a list of waiters only while someone waits.
"""

from __future__ import annotations

import asyncio

__all__ = ["Flag"]


class Flag:
    """Like :class:`asyncio.Event`; born set when ``value`` is true."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        """Set the flag and wake every task waiting for it."""
        if self._value:
            return
        self._value = True
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Unset the flag: :meth:`wait` blocks until the next :meth:`set`."""
        self._value = False

    async def wait(self) -> None:
        """Return once the flag is set (at once if it is)."""
        if self._value:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        try:
            await waiter
        finally:
            waiters = self._waiters
            waiters.remove(waiter)
            if not waiters:
                self._waiters = None

    def __repr__(self) -> str:
        waiting = len(self._waiters or ())
        return f"<Flag {'set' if self._value else 'unset'} waiters={waiting}>"
