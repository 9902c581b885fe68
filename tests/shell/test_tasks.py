"""TaskSet.aclose: a task whose cancellation was lost is cancelled again; one still
cleaning up after its cancel is left to finish."""

from __future__ import annotations

import asyncio

from gateway.tasks import TaskSet


def crash(task: asyncio.Task[object], exc: BaseException) -> None:
    raise AssertionError(f"{task.get_name()} failed: {exc!r}")


async def test_a_lost_cancellation_is_asked_for_again() -> None:
    swallowed = 0

    async def loses_its_first_cancel() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1
                # What Python 3.11's asyncio.timeout can do with a cancel that lands
                # as it expires: the task goes on, no longer cancelling.
                current = asyncio.current_task()
                assert current is not None
                current.uncancel()

    tasks = TaskSet("test", on_error=crash)
    task = tasks.spawn(loses_its_first_cancel(), name="stubborn")
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.aclose(timeout_s=30), 5)  # not the 30 s deadline
    assert task.cancelled()
    assert swallowed == 1


async def test_a_task_cleaning_up_after_its_cancel_is_not_interrupted() -> None:
    cleaned = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.5)  # longer than the re-check period
            cleaned.set()

    tasks = TaskSet("test", on_error=crash)
    task = tasks.spawn(slow_cleanup(), name="tidy")
    await asyncio.sleep(0)
    await tasks.aclose(timeout_s=5)
    assert cleaned.is_set()
    assert task.cancelled()
