"""docs/grafana-dashboard.json reads metrics the gateway really exports."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.client import Client
from tests.support.promql import evaluate, parse, scrape_samples
from tests.support.servers import RunningServer

DASHBOARD = orjson.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_bytes()
)
TARGETS = [(p["title"], t["expr"]) for p in DASHBOARD["panels"] for t in p["targets"]]


def test_the_dashboard_is_importable() -> None:
    assert DASHBOARD["__inputs"][0]["pluginId"] == "prometheus"
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]


SUFFIXES = {"counter": ("", "_total"), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def declared(text: str) -> set[str]:
    """Sample names of every metric the scrape declares, observed yet or not."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.update(name + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return names


@pytest.mark.parametrize(("title", "expr"), TARGETS)
def test_every_query_is_one_we_can_check(title: str, expr: str) -> None:
    parse(expr)


async def test_every_query_reads_a_metric_the_gateway_exports(
    offline_gateway: RunningServer,
) -> None:
    texts: list[str] = []

    async def scrape() -> tuple[float, dict]:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{offline_gateway.http_url}/metrics")).text
        texts.append(text)
        return time.monotonic(), scrape_samples(text)

    before = await scrape()
    async with await Client.connect(f"{offline_gateway.ws_url}/ws") as client:
        await client.ready()
        await client.send("hello")
        await client.turn()
        after = await scrape()
    exported = {name for name, _ in after[1]} | declared(texts[-1])
    for title, expr in TARGETS:
        query = parse(expr)
        assert query.metric in exported, f"{title}: {query.metric} is not exported"
    turns = evaluate(
        parse("sum by (status) (rate(gateway_turns_total[1m])) * 60"), [before, after], 1
    )
    assert turns[("completed",)] > 0
    p90 = parse(
        "histogram_quantile(0.9, sum by (le) (rate(gateway_turn_first_chunk_seconds_bucket[1m])))"
    )
    assert evaluate(p90, [before, after], 1)[()] is not None
