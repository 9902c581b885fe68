"""gateway.flag.Flag behaves as asyncio.Event does: set wakes every waiter, clear
wakes none, a set-then-clear still wakes those already waiting, and a cancelled
waiter leaves without harming the others."""

from __future__ import annotations

import asyncio

import pytest

from gateway.flag import Flag


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_born_set_or_unset() -> None:
    assert Flag(True).is_set()
    assert not Flag().is_set()
    await asyncio.wait_for(Flag(True).wait(), 1)


async def test_set_wakes_every_waiter_and_clear_blocks_again() -> None:
    flag = Flag()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await flag.wait()
        woken.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await _settle()
    flag.clear()  # clearing an unset flag wakes nobody
    await _settle()
    assert woken == []
    flag.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert sorted(woken) == [0, 1, 2]
    flag.clear()
    assert not flag.is_set()
    late = asyncio.create_task(flag.wait())
    await _settle()
    assert not late.done()
    flag.set()
    await asyncio.wait_for(late, 1)


async def test_a_set_then_clear_still_wakes_who_was_waiting() -> None:
    flag = Flag()
    task = asyncio.create_task(flag.wait())
    await _settle()
    flag.set()
    flag.clear()
    flag.set()  # its waiter is already woken: not woken twice
    flag.clear()
    await asyncio.wait_for(task, 1)
    assert not flag.is_set()


async def test_a_cancelled_waiter_leaves_and_the_others_still_wake() -> None:
    flag = Flag()
    gone = asyncio.create_task(flag.wait())
    stays = asyncio.create_task(flag.wait())
    await _settle()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert repr(flag) == "<Flag unset waiters=1>"
    flag.set()
    await asyncio.wait_for(stays, 1)
    assert repr(flag) == "<Flag set waiters=0>"


async def test_cancelled_after_set_but_before_it_ran() -> None:
    # The set() already resolved its future: cancelling the task then still
    # raises CancelledError in it (as with asyncio.Event), and nothing is left over.
    flag = Flag()
    task = asyncio.create_task(flag.wait())
    await _settle()
    flag.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert repr(flag) == "<Flag set waiters=0>"
    flag.clear()
    again = asyncio.create_task(flag.wait())
    await _settle()
    flag.set()
    await asyncio.wait_for(again, 1)


async def test_it_times_out_like_an_event() -> None:
    flag = Flag()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await flag.wait()
    assert repr(flag) == "<Flag unset waiters=0>"
