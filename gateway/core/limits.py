"""Rate limiting as pure arithmetic: a token bucket fed with the current time."""

from __future__ import annotations


class TokenBucket:
    """Allows ``rate`` events per second on average and bursts of ``burst``."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now

    def debit(self, amount: float, now: float) -> float:
        """Spend ``amount`` tokens even if that goes into debt; returns how many
        seconds to wait until the bucket is out of debt (0 when it is not)."""
        self._refill(now)
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def take(self, now: float) -> bool:
        """Spend one token if there is one; ``False`` means over the limit."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
