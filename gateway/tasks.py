"""Supervised tasks: the failure boundary of one owner (a session runtime).

asyncio's ``TaskGroup`` cancels every sibling when one task fails, which is right
inside one job and wrong for a whole application: a bug in one session would
cancel every other. A :class:`TaskSet` belongs to one owner; it keeps a reference
to every task it starts (nothing is fire-and-forget), reports a task that dies of
an unexpected exception to the owner's handler, and cancels and awaits what is
left when the owner closes it. Nothing escapes to a parent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("gateway.tasks")

T = TypeVar("T")

#: How often :meth:`TaskSet.aclose` looks for a task whose cancellation was lost.
RECANCEL_S = 0.1


class TaskSet:
    """The tasks of one owner; a failure goes to ``on_error``, never further."""

    def __init__(self, name: str, on_error: Callable[[asyncio.Task[Any], BaseException], None]):
        self._name = name
        self._on_error = on_error
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Start ``coro`` as a task of this set."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            try:
                self._on_error(task, exc)
            except Exception:  # the handler itself failed: log it, contain it
                log.exception("%s: error handler failed for task %s", self._name, task.get_name())

    async def aclose(self, timeout_s: float = 1.0) -> None:
        """Cancel every task still running and wait for them, ``timeout_s`` at most:
        a task that ignores its cancellation (a buggy provider) is logged and left
        to end on its own, still referenced here, instead of holding its owner up.

        A task whose cancellation was lost is cancelled again, checked every
        :data:`RECANCEL_S`: Python 3.11's ``asyncio.timeout`` (which redis-py uses for
        its socket timeouts) can swallow a cancel that lands as it expires, leaving
        the task not cancelling (``Task.cancelling() == 0``), and a loop that lost it
        would run to the deadline. A task still handling its cancel (cleaning up in a
        ``finally``) is not interrupted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                if not task.cancelling():
                    task.cancel()
            left = min(deadline - loop.time(), RECANCEL_S)
            if left <= 0:
                log.error(
                    "%s: %d task(s) ignored cancellation for %g s: %s",
                    self._name,
                    len(pending),
                    timeout_s,
                    ", ".join(task.get_name() for task in pending),
                )
                return
            await asyncio.wait(pending, timeout=left)
