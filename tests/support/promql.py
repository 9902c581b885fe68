"""Just enough PromQL to check and draw docs/grafana-dashboard.json offline.

The dashboard's queries use a small subset on purpose: ``sum(M)``,
``sum by (label) (M)``, each optionally over ``rate(M[window])``,
``histogram_quantile(q, sum by (le) (rate(M_bucket[window])))`` and a trailing
``* <number>``. :func:`parse` refuses anything else, so the dashboard stays
within what this can check; :func:`evaluate` computes a query over a list of
timestamped scrapes the way Prometheus would (without counter-reset handling).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]
Scrape = dict[tuple[str, Labels], float]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_INNER = rf"(?:rate\((?P<rated>{_NAME})\[(?P<window>\d+)(?P<unit>[sm])\]\)|(?P<plain>{_NAME}))"
_SUM = re.compile(rf"^sum(?:\s+by\s*\((?P<by>[a-z_, ]+)\))?\s*\(\s*{_INNER}\s*\)$")
_QUANTILE = re.compile(r"^histogram_quantile\(\s*(?P<q>0?\.\d+|1)\s*,\s*(?P<rest>.+)\)$")
_SCALE = re.compile(r"^(?P<expr>.+?)\s*\*\s*(?P<factor>\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Query:
    metric: str
    by: tuple[str, ...]
    window_s: float | None  # None: the raw value, else rate over the window
    quantile: float | None = None
    factor: float = 1.0


def parse(expr: str) -> Query:
    """A query of the supported shape, else ``ValueError``."""
    expr = " ".join(expr.split())
    factor = 1.0
    if scaled := _SCALE.match(expr):
        expr, factor = scaled["expr"], float(scaled["factor"])
    quantile = None
    if q := _QUANTILE.match(expr):
        quantile, expr = float(q["q"]), q["rest"].strip()
    found = _SUM.match(expr)
    if found is None:
        raise ValueError(f"unsupported query: {expr}")
    by = tuple(b.strip() for b in (found["by"] or "").split(",") if b.strip())
    window = None
    if found["rated"]:
        window = float(found["window"]) * (60 if found["unit"] == "m" else 1)
    metric = found["rated"] or found["plain"]
    if quantile is not None and (by != ("le",) or not metric.endswith("_bucket") or window is None):
        raise ValueError(f"histogram_quantile needs sum by (le) (rate(X_bucket[w])): {expr}")
    return Query(metric, by, window, quantile, factor)


def scrape_samples(text: str) -> Scrape:
    """Every sample of a Prometheus text exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _grouped(query: Query, scrape: Scrape) -> dict[tuple[str, ...], float]:
    groups: dict[tuple[str, ...], float] = {}
    for (name, labels), value in scrape.items():
        if name != query.metric:
            continue
        as_dict = dict(labels)
        key = tuple(as_dict.get(b, "") for b in query.by)
        groups[key] = groups.get(key, 0.0) + value
    return groups


def _quantile(q: float, buckets: dict[tuple[str, ...], float]) -> float | None:
    ordered = sorted(((float(le[0]), count) for le, count in buckets.items()), key=lambda b: b[0])
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (
                (rank - below) / (count - below) if count > below else 0
            )
        lower, below = bound, count
    return lower


def evaluate(
    query: Query, scrapes: list[tuple[float, Scrape]], at: int
) -> dict[tuple[str, ...], float | None]:
    """The query's value per group at ``scrapes[at]``."""
    now, current = scrapes[at]
    values: dict[tuple[str, ...], float] = _grouped(query, current)
    if query.window_s is not None:
        start = max((i for i, (t, _) in enumerate(scrapes) if t <= now - query.window_s), default=0)
        then, old = scrapes[start]
        elapsed = max(now - then, 1e-9)
        before = _grouped(query, old)
        values = {
            k: (v - before.get(k, 0.0)) / elapsed if at > start else 0.0 for k, v in values.items()
        }
    if query.quantile is not None:
        result = _quantile(query.quantile, values)
        return {(): None if result is None else result * query.factor}
    return {k: v * query.factor for k, v in values.items()}
