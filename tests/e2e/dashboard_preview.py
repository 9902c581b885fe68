"""Draw docs/grafana-dashboard.png (the Grafana dashboard over a real scrape) and
docs/status-page.png (the gateway's own /status page under the same load).

There is no Grafana here, so this plays its part: it runs a real gateway under a
simulated load (users talking, interrupting, dropping and resuming; a provider
that is rate limited now and then), scrapes ``/metrics`` every few seconds,
evaluates each panel's query of ``docs/grafana-dashboard.json`` over those
scrapes (tests/support/promql.py), lays the panels out on Grafana's 24-column
grid in a page styled like Grafana's dark theme, and screenshots it in headless
Chromium. Run it to refresh the picture (it takes a few minutes):

    .venv/bin/python -m tests.e2e.dashboard_preview [seconds]
"""

from __future__ import annotations

import asyncio
import html
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from playwright.async_api import async_playwright

from gateway.app import create_app, uvicorn_options
from gateway.core.history import FunctionCall, GenerationRequest, StreamItem
from gateway.providers.base import ProviderError
from gateway.providers.offline import OfflineProvider
from gateway.settings import Settings
from tests.e2e.helpers import CHROMIUM, CHROMIUM_ARGS
from tests.support.client import Client
from tests.support.promql import Scrape, evaluate, parse, scrape_samples
from tests.support.servers import RunningServer, running
from tests.support.webhooks import webhook_server

DOCS = Path(__file__).resolve().parents[2] / "docs"
DASHBOARD = orjson.loads((DOCS / "grafana-dashboard.json").read_bytes())
CSS = (Path(__file__).parent / "dashboard_preview.css").read_text(encoding="utf-8")
PALETTE = ["#73bf69", "#fade2a", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff"]
WIDTH = 1400
ROW_PX = 30
SCRAPE_S = 3.0
#: What the users ask now and then besides their numbered questions: tool calls.
QUESTIONS = ("what is the weather in Paris?", "and the weather tomorrow?")
TOOLS = """allow_private_addresses: true
tools:
  - name: get_weather
    description: The current weather in a city.
    parameters: {{type: object, properties: {{city: {{type: string}}}}}}
    url: {weather}
  - name: get_forecast
    description: Tomorrow's weather in a city.
    parameters: {{type: object, properties: {{city: {{type: string}}}}}}
    url: {broken}
"""


class FlakyOffline(OfflineProvider):
    """The offline provider, refused now and then as a busy model API would be; asked
    about the weather, it calls the tools file's ``get_weather`` or ``get_forecast``
    (whose webhook fails), then says what came back."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(token_delay_s=0.03)
        self._rng = rng
        self._calls = 0

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        await asyncio.sleep(self._rng.uniform(0.05, 0.6))  # the model "thinks"
        if self._rng.random() < 0.06:
            raise ProviderError("busy", code="rate_limited", retryable=True, status=429)
        last = request.messages[-1] if request.messages else None
        if last is not None and last.role == "user" and "weather" in last.text:
            self._calls += 1
            name = "get_forecast" if "tomorrow" in last.text else "get_weather"
            yield FunctionCall(f"call-{self._calls}", name, '{"city": "Paris"}')
            return
        if last is not None and last.role == "tool":
            found = orjson.loads(last.text)
            sky = found.get("sky") if isinstance(found, dict) else None
            yield f"It is {sky} in Paris." if sky else "I could not get the forecast."
            return
        async for delta in super().stream(request):
            yield delta


async def user(gateway: RunningServer, rng: random.Random, until: float) -> None:
    """One person: talks, sometimes talks over the reply, sometimes drops and comes back."""
    while time.monotonic() < until:
        client = await Client.connect(f"{gateway.ws_url}/ws")
        ready = await client.ready()
        last = 0
        for n in range(rng.randint(3, 8)):
            text = rng.choice(QUESTIONS) if rng.random() < 0.25 else f"question {n}"
            await client.send({"type": "user.message", "text": text, "id": f"u{n}"})
            if rng.random() < 0.2:
                await asyncio.sleep(rng.uniform(0.2, 0.8))
                await client.send({"type": "interrupt"})
            events = await client.recv_until(lambda e: e["type"] == "response.end")
            last = events[-1]["seq"]
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            if time.monotonic() > until:
                break
        await client.ws.close()
        if rng.random() < 0.4:  # a dropped network: resume where it was
            url = (
                f"{gateway.ws_url}/ws?session_id={ready['session_id']}"
                f"&resume_token={ready['resume_token']}&last_seq={last}"
            )
            async with await Client.connect(url) as again:
                await again.ready()
        await asyncio.sleep(rng.uniform(0.5, 2.0))


async def collect(gateway: RunningServer, seconds: float) -> list[tuple[float, Scrape]]:
    rng = random.Random(7)
    until = time.monotonic() + seconds
    scrapes: list[tuple[float, Scrape]] = []

    async def scraper() -> None:
        async with httpx.AsyncClient() as http:
            while time.monotonic() < until + SCRAPE_S:
                text = (await http.get(f"{gateway.http_url}/metrics")).text
                scrapes.append((time.time(), scrape_samples(text)))
                await asyncio.sleep(SCRAPE_S)

    async def staggered(i: int) -> None:
        await asyncio.sleep(i * seconds / 30)  # load ramps up
        await user(gateway, random.Random(rng.random()), until)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(scraper())
        for i in range(12):
            tasks.create_task(staggered(i))
    return scrapes


def series(panel: dict[str, Any], scrapes: list[tuple[float, Scrape]]) -> list[dict[str, Any]]:
    """Each target's lines: ``{name, points: [(t, value | None)]}``."""
    lines: dict[str, list[tuple[float, float | None]]] = {}
    for target in panel["targets"]:
        query = parse(target["expr"])
        legend = target.get("legendFormat") or target["expr"]
        for at in range(len(scrapes)):
            for key, value in evaluate(query, scrapes, at).items():
                name = legend
                for label, label_value in zip(query.by, key, strict=False):
                    name = name.replace("{{" + label + "}}", label_value)
                lines.setdefault(name, []).append((scrapes[at][0], value))
    return [{"name": name, "points": points} for name, points in sorted(lines.items())]


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "s":
        if value < 0.01:  # a store commit takes a fraction of a millisecond
            return f"{value * 1000:.2f} ms"
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:.1f}" if value < 10 and value != int(value) else f"{value:.0f}"


def chart(
    lines: list[dict[str, Any]], unit: str, width: float, height: float, *, axes: bool = True
) -> str:
    left, right, top, bottom = (58, width - 10, 6, height - 22) if axes else (0, width, 2, height)
    times = [t for line in lines for t, _ in line["points"]]
    values = [v for line in lines for _, v in line["points"] if v is not None]
    if not times:
        return ""
    t0, t1 = min(times), max(times)
    vmax = max(values + [1e-9]) * 1.15 or 1
    x = lambda t: left + (t - t0) / max(t1 - t0, 1e-9) * (right - left)  # noqa: E731
    y = lambda v: bottom - v / vmax * (bottom - top)  # noqa: E731
    parts: list[str] = []
    for i in range(5 if axes else 0):
        v = vmax * i / 4
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="g"/>')
        tick = f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{fmt(v, unit)}</text>'
        parts.append(tick)
    for i in range(6 if axes else 0):
        t = t0 + (t1 - t0) * i / 5
        label = time.strftime("%H:%M:%S", time.localtime(t))
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        parts.append(f'<text x="{x(t):.1f}" y="{height - 4}" text-anchor="{anchor}">{label}</text>')
    for n, line in enumerate(lines):
        color = PALETTE[n % len(PALETTE)]
        d, pen = "", "M"
        for t, v in line["points"]:
            if v is None:
                pen = "M"
                continue
            d += f"{pen}{x(t):.1f},{y(v):.1f} "
            pen = "L"
        if d:
            start = next(x(t) for t, v in line["points"] if v is not None)
            area = f"{d}L{right:.1f},{bottom} L{start:.1f},{bottom} Z" if len(lines) == 1 else ""
            if area:
                parts.append(f'<path d="{area}" fill="{color}" opacity="0.12" stroke="none"/>')
            parts.append(f'<path d="{d.strip()}" stroke="{color}" fill="none" stroke-width="2"/>')
    return f'<svg width="{width}" height="{height}">{"".join(parts)}</svg>'


def render(scrapes: list[tuple[float, Scrape]]) -> str:
    col = WIDTH / 24
    boxes = []
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        w, h = pos["w"] * col - 8, pos["h"] * ROW_PX - 8
        lines = series(panel, scrapes)
        style = (
            f"left:{pos['x'] * col + 4:.0f}px;top:{pos['y'] * ROW_PX + 4}px;"
            f"width:{w:.0f}px;height:{h}px"
        )
        title = html.escape(panel["title"])
        if panel["type"] == "stat":
            last = next((v for _, v in reversed(lines[0]["points"]) if v is not None), None)
            spark = chart(lines, unit, w - 16, h - 84, axes=False)
            body = f'<div class="stat">{fmt(last, unit)}</div>{spark}'
            boxes.append(f'<div class="panel" style="{style}"><h3>{title}</h3>{body}</div>')
            continue
        legend = "".join(
            f'<span><i style="background:{PALETTE[n % len(PALETTE)]}"></i>'
            f"{html.escape(line['name'])}</span>"
            for n, line in enumerate(lines)
        )
        body = chart(lines, unit, w - 16, h - 62) + f'<div class="legend">{legend}</div>'
        boxes.append(f'<div class="panel" style="{style}"><h3>{title}</h3>{body}</div>')
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in DASHBOARD["panels"])
    size = f"--width:{WIDTH}px;--height:{rows * ROW_PX + 8}px"
    caption = f"Prometheus · {len(scrapes)} scrapes every {SCRAPE_S:g} s of a gateway under load"
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>{CSS}</style></head><body>
<div class="top"><b>voice-gateway</b><span>{caption}</span></div>
<div class="grid" style="{size}">{"".join(boxes)}</div></body></html>"""


async def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, webhook_server() as webhooks:
        tools = Path(tmp) / "tools.yaml"
        weather, broken = webhooks.url("/weather"), webhooks.url("/broken")
        tools.write_text(TOOLS.format(weather=weather, broken=broken), encoding="utf-8")
        settings = Settings(
            _env_file=None,
            GATEWAY_STORE=f"sqlite:///{tmp}/g.db",
            GATEWAY_PROVIDER_BACKOFF_S=0.2,
            GATEWAY_TOOLS_FILE=str(tools),
        )
        app = create_app(settings, provider=FlakyOffline(random.Random(3)))
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            with running(app, **uvicorn_options(settings)) as gateway:
                scrapes = await collect(gateway, seconds)
                # The gateway's own /status page, with the same figures, while it runs.
                status = await browser.new_page(viewport={"width": 1100, "height": 640})
                await status.goto(f"{gateway.http_url}/status")
                await status.wait_for_selector("body[data-loaded=true]")
                await status.screenshot(path=str(DOCS / "status-page.png"), full_page=True)
            page = await browser.new_page(viewport={"width": WIDTH + 16, "height": 900})
            await page.set_content(render(scrapes))
            await page.screenshot(path=str(DOCS / "grafana-dashboard.png"), full_page=True)
            await browser.close()
    sys.stderr.write(
        f"wrote docs/grafana-dashboard.png and docs/status-page.png ({len(scrapes)})\n"
    )


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 150.0))
