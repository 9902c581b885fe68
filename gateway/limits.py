"""Connection limits of this process: overall and per principal."""

from __future__ import annotations

from collections import Counter


class ConnectionLimiter:
    """Counts open connections; refuses past ``total`` or ``per_principal``."""

    def __init__(self, *, total: int, per_principal: int) -> None:
        self._total = total
        self._per_principal = per_principal
        self._open = 0
        self._by_principal: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return self._open

    def acquire(self, principal: str | None) -> str | None:
        """Count a new connection, or say why it is refused."""
        if self._open >= self._total:
            return f"the gateway has its maximum of {self._total} connections"
        if principal is not None and self._by_principal[principal] >= self._per_principal:
            return f"at most {self._per_principal} connections per caller"
        self._open += 1
        if principal is not None:
            self._by_principal[principal] += 1
        return None

    def release(self, principal: str | None) -> None:
        """A connection counted by :meth:`acquire` has ended."""
        self._open -= 1
        if principal is not None:
            self._by_principal[principal] -= 1
            if self._by_principal[principal] <= 0:
                del self._by_principal[principal]
