"""Stage a short conversation in the UI, and take the screenshots kept in docs/.

``stage_conversation`` is shared with the layout test. Run this module to refresh
docs/screenshot.png (light, desktop), docs/screenshot-dark.png and
docs/screenshot-phone.png against a local offline gateway:

    .venv/bin/python -m tests.e2e.screenshots
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Literal

from playwright.async_api import ViewportSize, async_playwright, expect

from gateway.app import create_app, uvicorn_options
from gateway.settings import Settings
from tests.e2e.helpers import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, Ui, init_script
from tests.support.servers import running

DOCS = Path(__file__).resolve().parents[2] / "docs"


async def stage_conversation(ui: Ui) -> None:
    """Two turns: the first stopped with Esc part-way through, the second being spoken."""
    page = ui.page
    all_queued = (
        "window.__tts.spoken.length === document.querySelectorAll('#transcript .chunk').length"
    )
    await ui.type_message("Tell me about the weather in Madrid this weekend.")
    await ui.wait_turn("t1")
    await page.wait_for_function(all_queued)
    await ui.eval("__tts.finish()")
    await ui.eval("__tts.boundary(9, 7)")  # "I am the offline|"
    await ui.focus_nothing()
    await page.keyboard.press("Escape")  # stop it mid-sentence
    await expect(ui.turn("t1").locator(".meta")).to_be_visible()

    await ui.type_message("Sorry, please go on.")
    await ui.wait_turn("t2")
    await page.wait_for_function(all_queued)
    await ui.eval("__tts.finish()")
    await expect(ui.turn("t2").locator(".chunk--speaking")).to_have_count(1)
    await ui.focus_nothing()


async def capture(
    base_url: str,
    path: Path,
    *,
    viewport: ViewportSize = DESKTOP,
    color_scheme: Literal["light", "dark"] = "light",
) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        context = await browser.new_context(
            viewport=viewport, color_scheme=color_scheme, locale="en-US"
        )
        await context.add_init_script(init_script())
        ui = await Ui(await context.new_page(), base_url).load()
        await stage_conversation(ui)
        await ui.page.screenshot(path=str(path), animations="disabled")
        await browser.close()


async def main() -> None:
    settings = Settings(
        _env_file=None, GEMINI_API_KEY="", GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_STORE="memory://"
    )
    with running(create_app(settings), **uvicorn_options(settings)) as gateway:
        await capture(gateway.http_url, DOCS / "screenshot.png")
        await capture(gateway.http_url, DOCS / "screenshot-dark.png", color_scheme="dark")
        await capture(gateway.http_url, DOCS / "screenshot-phone.png", viewport=PHONE)
    sys.stdout.write(f"wrote the screenshots to {DOCS}\n")


if __name__ == "__main__":
    asyncio.run(main())
