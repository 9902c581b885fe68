"""Page helpers for the browser tests: one :class:`Ui` per loaded page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Locator,
    Page,
    ViewportSize,
    expect,
)

STUBS_JS = (Path(__file__).parent / "stubs.js").read_text(encoding="utf-8")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


def init_script(
    *, recognition: bool = True, mic_denied: bool = False, tts_error: str | None = None
) -> str:
    """The init script: stub options first, then the stubs (one script, so the order holds)."""
    options = {"recognition": recognition, "micDenied": mic_denied, "ttsError": tts_error}
    return f"window.__stubOptions = {json.dumps(options)};\n{STUBS_JS}"


class Ui:
    """A page of the voice UI with the test stubs installed; collects console errors."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.problems: list[str] = []
        self.allowed: list[re.Pattern[str]] = []
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            url = message.location.get("url", "")
            self.problems.append(f"console error: {message.text}" + (f" ({url})" if url else ""))

    def _on_page_error(self, error: Error) -> None:
        self.problems.append(f"page error: {error}")

    def allow_console_error(self, pattern: str) -> None:
        """Tolerate console errors matching ``pattern`` (e.g. a refused WebSocket)."""
        self.allowed.append(re.compile(pattern))

    def allow_outage(self) -> None:
        """Tolerate what a cut gateway makes the browser log: the refused WebSocket, and
        the favicon, which Chromium fetches lazily after load and a cut can catch."""
        self.allow_console_error(r"WebSocket connection to .* failed")
        self.allow_console_error(
            r"^console error: Failed to load resource: .* \(\S*/favicon\.svg\)$"
        )

    def unexpected_problems(self) -> list[str]:
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]

    # --- loading ---------------------------------------------------------------------

    async def load(self) -> Ui:
        await self.page.goto(f"{self.base_url}/")
        await self.connected()
        return self

    async def reload(self) -> None:
        await self.page.reload()
        await self.connected()

    async def connected(self, within_ms: float = 10_000) -> None:
        await expect(self.page.locator("#status")).to_have_attribute(
            "data-state", "open", timeout=within_ms
        )

    # --- state -------------------------------------------------------------------------

    async def eval(self, expression: str) -> Any:
        return await self.page.evaluate(expression)

    async def sent(self, type_: str | None = None) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = await self.page.evaluate("window.__sent")
        return [f for f in frames if type_ is None or f.get("type") == type_]

    async def sockets(self) -> list[str]:
        urls: list[str] = await self.page.evaluate("window.__sockets")
        return urls

    async def spoken(self) -> list[dict[str, Any]]:
        spoken: list[dict[str, Any]] = await self.page.evaluate("window.__tts.spoken")
        return spoken

    async def session_id(self) -> str:
        await expect(self.page.locator("body")).to_have_attribute(
            "data-session-id", re.compile(".")
        )
        value = await self.page.locator("body").get_attribute("data-session-id")
        assert value
        return value

    # --- transcript ------------------------------------------------------------------------

    @property
    def user_turns(self) -> Locator:
        return self.page.locator("#transcript .turn--user")

    @property
    def assistant_turns(self) -> Locator:
        return self.page.locator("#transcript .turn--assistant")

    def turn(self, turn_id: str) -> Locator:
        return self.page.locator(f'#transcript .turn--assistant[data-turn-id="{turn_id}"]')

    def chunks(self, turn_id: str) -> Locator:
        return self.turn(turn_id).locator(".chunk")

    async def chunk_list(self, turn_id: str) -> list[tuple[int, str]]:
        """``(index, text)`` of every chunk shown for ``turn_id``, in page order."""
        items: list[list[Any]] = await self.chunks(turn_id).evaluate_all(
            "nodes => nodes.map(n => [Number(n.dataset.index), n.textContent])"
        )
        return [(int(i), str(t)) for i, t in items]

    async def wait_turn(
        self, turn_id: str, status: str = "completed", within_ms: float = 10_000
    ) -> None:
        await expect(self.turn(turn_id)).to_have_attribute("data-status", status, timeout=within_ms)

    # --- actions ---------------------------------------------------------------------------

    async def type_message(self, text: str) -> None:
        box = self.page.locator("#message")
        await box.fill(text)
        await box.press("Enter")

    async def focus_nothing(self) -> None:
        await self.page.evaluate("document.activeElement && document.activeElement.blur()")


class OpenUi:
    """``await open_ui(base_url, recognition=True, mic_denied=False, viewport=…,
    color_scheme="light", load=True)``: a new browser context and page, with the stubs.

    It remembers every page it opened (and windows they opened, through
    :meth:`adopt`) to check at the end of the test that none logged an error.
    """

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.uis: list[Ui] = []

    async def __call__(
        self,
        base_url: str,
        *,
        recognition: bool = True,
        mic_denied: bool = False,
        tts_error: str | None = None,
        viewport: ViewportSize | None = None,
        color_scheme: Literal["light", "dark"] = "light",
        load: bool = True,
    ) -> Ui:
        context = await self.browser.new_context(
            viewport=viewport or DESKTOP, color_scheme=color_scheme, locale="en-US"
        )
        self.contexts.append(context)
        # On the context, so that windows the page opens get the stubs too.
        await context.add_init_script(
            init_script(recognition=recognition, mic_denied=mic_denied, tts_error=tts_error)
        )
        ui = self.adopt(await context.new_page(), base_url)
        if load:
            await ui.load()
        return ui

    def adopt(self, page: Page, base_url: str) -> Ui:
        """Watch a page that was opened another way (e.g. by window.open)."""
        ui = Ui(page, base_url)
        self.uis.append(ui)
        return ui

    async def close(self) -> list[str]:
        for context in self.contexts:
            await context.close()
        return [problem for ui in self.uis for problem in ui.unexpected_problems()]
