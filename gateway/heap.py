"""The garbage collector of a serving process: the start-up heap is frozen, and full
collections are made rarer.

A gateway process imports a large, long-lived object graph (the SDKs, pydantic's
schemas, starlette, OpenTelemetry) before it serves anything. CPython's cyclic
collector walks every tracked object on each full (oldest-generation) collection,
so with that graph in the heap a full collection paused the event loop for 60–130
ms under load (``bench/suite.py``'s stall probe, 100 concurrent sessions), which
every session on the process heard as a gap. :func:`tune_collector`, called once the
server is listening, collects once and moves everything allocated so far to the
permanent generation (:func:`gc.freeze`): it is never scanned again, and full
collections walk only what the sessions allocated since.

That is still every live session's objects: about 50,000 at 250 sessions, a 45 ms
pause. CPython makes one once the oldest generation grew by a quarter and at least
``threshold2`` (10) middle-generation collections ran since the last: with the
start-up heap frozen the quarter is soon reached, so at 100 sessions one came every
4 s or so. :data:`FULL_EVERY` raises that count to 100 (about every 40 s at 100
sessions); young collections are unchanged. What that costs is memory: garbage in
reference cycles that reached the oldest generation waits up to ten times longer
(no change to RSS in the benchmark's sweep).
"""

from __future__ import annotations

import gc
import logging
from typing import Final

log = logging.getLogger("gateway.heap")

#: Middle-generation collections between two full ones, at least (CPython: 10).
FULL_EVERY: Final = 100


def tune_collector() -> int:
    """Collect, freeze every object alive now and space full collections out; returns
    how many objects were frozen."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_EVERY)
    frozen = gc.get_freeze_count()
    log.debug(
        "froze %d start-up objects out of the garbage collector's scans; "
        "a full collection at most every %d middle ones",
        frozen,
        gc.get_threshold()[2],  # as set, so that the log says what holds
    )
    return frozen
