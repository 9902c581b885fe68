"""Browser checks for the operations work: the page keeps what the user read when
it cannot speak, and the /status page draws live figures."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from playwright.async_api import expect
from starlette.staticfiles import StaticFiles

from gateway.app import WEB_DIR
from tests.e2e.helpers import OpenUi
from tests.support.client import Client
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_typing_over_a_reply_that_could_not_be_spoken_keeps_what_was_read(
    slow_gateway: RunningServer, open_ui: OpenUi
) -> None:
    ui = await open_ui(slow_gateway.http_url, tts_error="synthesis-failed")
    await ui.type_message("Please tell me a long story about a lighthouse keeper and her cat")
    await expect(ui.page.get_by_text("could not read the reply aloud")).to_be_visible()
    await expect(ui.chunks("t1")).not_to_have_count(0)
    await ui.page.locator("#message").press_sequentially("W")  # typing over the reply
    await ui.page.wait_for_function("window.__sent.some(f => f.type === 'interrupt')")
    (interrupt,) = await ui.sent("interrupt")
    shown = [text for _, text in await ui.chunk_list("t1")]
    assert interrupt["turn_id"] == "t1"
    assert interrupt.get("heard_text") != "", "what the user read was struck out"
    # Everything shown when the user typed (a chunk in flight may have landed after).
    assert interrupt["heard_text"] in (" ".join(shown), " ".join(shown[:-1]))
    assert interrupt["heard_text"].startswith(shown[0])
    await expect(ui.turn("t1").locator(".meta")).to_contain_text("Interrupted")
    kept_all = interrupt["heard_text"] == " ".join(shown)
    await expect(ui.turn("t1").locator(".chunk--unheard")).to_have_count(0 if kept_all else 1)


async def test_the_page_served_from_another_origin_talks_to_the_gateway(
    start_gateway: GatewayFactory, open_ui: OpenUi, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    shutil.copytree(WEB_DIR, site)
    static = RunningServer(StaticFiles(directory=site, html=True), lifespan="off")
    page_origin = static.http_url
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_ALLOWED_ORIGINS=page_origin)
    index = site / "index.html"
    html = index.read_text(encoding="utf-8")
    meta = '<meta name="voice-gateway-url" content="" />'
    assert meta in html
    index.write_text(
        html.replace(meta, f'<meta name="voice-gateway-url" content="{gateway.ws_url}/" />'),
        encoding="utf-8",
    )
    static.start()
    try:
        ui = await open_ui(page_origin)
        await ui.type_message("Hello from elsewhere")
        await ui.wait_turn("t1")
        sockets = await ui.eval("__sockets")
    finally:
        static.stop()
    assert sockets
    assert all(url.startswith(f"{gateway.ws_url}/ws") for url in sockets)


async def test_the_status_page_draws_live_figures(
    start_gateway: GatewayFactory, open_ui: OpenUi
) -> None:
    key = "status-key-0123456789"
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_METRICS_KEY=key)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        for i in range(3):
            await client.send(f"message {i}")
            await client.turn(f"t{i + 1}")

        ui = await open_ui(gateway.http_url, load=False)
        ui.allow_console_error("401")
        await ui.page.goto(f"{gateway.http_url}/status")
        await expect(ui.page.locator("#problem")).to_contain_text("metrics key")

        await ui.page.goto(f"{gateway.http_url}/status#key={key}")
        await ui.page.reload()
        await expect(ui.page.locator("body")).to_have_attribute("data-loaded", "true")
        await expect(ui.page.locator("#problem")).to_be_hidden()
        await expect(ui.page.locator("#live-sessions")).to_have_text("1")
        await expect(ui.page.locator("#connections")).to_have_text("1")
        await expect(ui.page.locator("#connections-label")).to_contain_text("/ws 1")
        await expect(ui.page.locator("#turns-minute")).to_have_text("3")
        await expect(ui.page.locator("#failed")).to_have_text("0")
        await expect(ui.page.locator("#p90-now")).to_have_text(re.compile(r"^\d+ ms$"))
        bars = ui.page.locator("#turns-chart rect.bar[data-turns]")
        await expect(bars).to_have_count(30)
        # The three turns fall in the last minute's bar, or the two last ones across :00.
        counts = [int(await bars.nth(i).get_attribute("data-turns") or 0) for i in (28, 29)]
        assert sum(counts) == 3
        assert float(await bars.last.get_attribute("height") or 0) > 0
        for name in ("p50", "p90", "p99"):
            await expect(ui.page.locator(f"#latency-chart path.{name}")).to_have_attribute(
                "data-points", "1"
            )
