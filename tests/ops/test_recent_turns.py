"""The status page's record of recent turns: counted per minute, and not walked by the
cyclic collector (full collections pause every session's event loop per object)."""

from __future__ import annotations

import gc

from gateway.metrics import GatewayMetrics


def test_recent_turns_are_counted_and_leave_no_tracked_objects() -> None:
    now = [1_800_000_000.0]
    metrics = GatewayMetrics(clock=lambda: now[0])
    metrics.turn_ended("ws", "completed", first_token_ms=50, first_chunk_ms=200, total_ms=900)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(1000):
        status = "failed" if i % 10 == 0 else "completed"
        metrics.turn_ended("ws", status, first_token_ms=50, first_chunk_ms=200, total_ms=900)
    gc.collect()
    assert len(gc.get_objects()) - before < 50

    status = metrics.status(minutes=1)
    assert status["turns_last_minute"] == 1001
    (minute,) = status["minutes"]  # type: ignore[misc]
    assert (minute["turns"], minute["failed"]) == (1001, 100)
    assert minute["first_chunk_p50_s"] == 0.2
