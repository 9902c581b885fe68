"""The token bucket."""

from __future__ import annotations

import pytest

from gateway.core.limits import TokenBucket


def test_burst_then_steady_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.4) is False
    assert bucket.take(0.5) is True
    assert bucket.take(10.0) is True
    assert [bucket.take(10.0) for _ in range(3)] == [True, True, False]


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0, burst=1)


def test_debit_goes_into_debt_and_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=100.0, burst=100)
    assert bucket.debit(60, now=0.0) == 0.0
    assert bucket.debit(90, now=0.0) == pytest.approx(0.5)  # 50 in debt at 100/s
    assert bucket.debit(0, now=0.5) == 0.0
    assert bucket.debit(100, now=10.0) == 0.0  # refilled to the burst, no further
