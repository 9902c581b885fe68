"""The garbage collector of a serving process: the start-up heap is frozen.

A gateway process imports a large, long-lived object graph (the SDKs, pydantic's
schemas, starlette, OpenTelemetry) before it serves anything. CPython's cyclic
collector walks every tracked object on each full (oldest-generation) collection,
so with that graph in the heap a full collection paused the event loop for 60–130
ms under load (``bench/suite.py``'s stall probe, 100 concurrent sessions), which
every session on the process heard as a gap. :func:`freeze_startup_heap`, called
once the server is listening, collects once and moves everything allocated so far
to the permanent generation (:func:`gc.freeze`): it is never scanned again, and
full collections walk only what the sessions allocated since.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("gateway.heap")


def freeze_startup_heap() -> int:
    """Collect, then freeze every object alive now; returns how many were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d start-up objects out of the garbage collector's scans", frozen)
    return frozen
