"""The browser UI (web/) in real headless Chromium, against the real gateway.

Speech is stubbed (see stubs.js): the speechSynthesis stand-in keeps each
utterance pending until the test calls ``__tts.finish()``, and the
SpeechRecognition stand-in hears what the test passes to ``__stt.say()``.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import expect

from tests.e2e.helpers import PHONE, OpenUi
from tests.e2e.proxy import TcpProxy
from tests.e2e.screenshots import stage_conversation
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

CONNECTION_SCENARIO = (Path(__file__).parent / "connection_scenario.js").read_text(encoding="utf-8")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def test_a_typed_message_streams_chunks_and_ends_the_turn(
    gateway: RunningServer, open_ui: OpenUi
) -> None:
    ui = await open_ui(gateway.http_url)
    await expect(ui.page.locator("#empty")).to_be_visible()
    await ui.type_message("Hello there")

    await expect(ui.user_turns).to_have_text(["You said: Hello there"])
    await ui.wait_turn("t1")
    await expect(ui.page.locator("#empty")).to_be_hidden()
    chunks = await ui.chunk_list("t1")
    assert [index for index, _ in chunks] == [0, 1, 2, 3]
    assert chunks[0][1] == 'You said: "Hello there".'
    (message,) = await ui.sent("user.message")
    assert message["text"] == "Hello there"
    assert UUID.match(message["id"])
    # Every chunk went to speech as it arrived, in English.
    spoken = await ui.spoken()
    assert [s["text"] for s in spoken] == [text for _, text in chunks]
    assert {s["lang"] for s in spoken} == {"en-US"}
    assert await ui.page.locator("#transcript").get_attribute("aria-live") == "polite"


async def test_a_socket_cut_mid_turn_resumes_with_every_chunk_once(
    proxy: TcpProxy, slow_gateway: RunningServer, open_ui: OpenUi
) -> None:
    ui = await open_ui(proxy.http_url)
    ui.allow_outage()
    session_id = await ui.session_id()
    await ui.type_message("Please tell me a long story about a lighthouse keeper and her cat")
    await expect(ui.chunks("t1")).not_to_have_count(0)
    shown_before_the_cut = await ui.chunks("t1").count()

    assert proxy.drop_all() >= 1  # the browser sees 1006, the gateway a lost client
    await ui.wait_turn("t1", within_ms=15_000)
    await ui.connected()

    chunks = await ui.chunk_list("t1")
    assert shown_before_the_cut < len(chunks), "the cut did not happen mid-turn"
    assert [index for index, _ in chunks] == list(range(len(chunks)))
    async with httpx.AsyncClient() as client:
        record = (await client.get(f"{slow_gateway.http_url}/sessions/{session_id}")).json()
    (turn,) = record["turns"]
    assert turn["status"] == "completed"
    assert " ".join(text for _, text in chunks) == turn["text"]
    await expect(ui.assistant_turns).to_have_count(1)
    # It resumed the same session from where it was; nothing was asked or spoken twice.
    sockets = await ui.sockets()
    assert len(sockets) == 2
    resume = re.search(r"session_id=([^&]+)&resume_token=[^&]+&last_seq=(\d+)", sockets[1])
    assert resume is not None
    assert resume.group(1) == session_id
    assert int(resume.group(2)) >= 2
    assert len(await ui.sent("user.message")) == 1
    assert [s["text"] for s in await ui.spoken()] == [text for _, text in chunks]


async def test_an_unreachable_gateway_is_reported_and_the_page_recovers(
    proxy: TcpProxy, open_ui: OpenUi
) -> None:
    ui = await open_ui(proxy.http_url)
    ui.allow_outage()
    session_id = await ui.session_id()
    proxy.refusing = True
    proxy.drop_all()

    status = ui.page.locator("#status")
    await expect(status).to_have_attribute("data-state", "down", timeout=10_000)
    await expect(status).to_contain_text("Gateway unreachable, retrying in")
    notice = ui.page.locator('.notice[data-key="connection"]')
    await expect(notice).to_contain_text("Can't reach the gateway.")

    # A message typed meanwhile waits, and goes out once the session is back.
    await ui.type_message("Are you back?")
    await expect(ui.user_turns).to_have_text(["You said: Are you back?"])
    proxy.refusing = False
    await ui.page.get_by_role("button", name="Retry now").click()
    await ui.connected()
    await expect(notice).to_have_count(0)
    assert f"session_id={session_id}" in (await ui.sockets())[-1]
    await ui.wait_turn("t1", within_ms=15_000)
    await expect(ui.user_turns).to_have_count(1)
    assert len(await ui.sent("user.message")) == 1


async def test_barge_in_cancels_speech_and_sends_interrupt_with_what_was_heard(
    gateway: RunningServer, open_ui: OpenUi
) -> None:
    ui = await open_ui(gateway.http_url)
    await ui.type_message("Tell me something")
    await ui.wait_turn("t1")  # streamed at once; speech is still playing chunk 0
    chunks = [text for _, text in await ui.chunk_list("t1")]
    await ui.page.wait_for_function("window.__tts.spoken.length === 4")
    stop = ui.page.get_by_role("button", name="Stop speaking")
    await expect(stop).to_be_visible()

    assert await ui.eval("__tts.finish()")  # chunk 0 heard in full
    await ui.page.wait_for_function("window.__sent.some(f => f.type === 'playback.ack')")
    assert chunks[1].startswith("I am the offline")
    assert await ui.eval("__tts.boundary(5, 3)")  # chunk 1 got as far as "the"
    await ui.focus_nothing()
    await ui.page.keyboard.down("Space")  # push to talk while it speaks

    await ui.page.wait_for_function("window.__sent.some(f => f.type === 'interrupt')")
    (interrupt,) = await ui.sent("interrupt")
    assert interrupt == {
        "type": "interrupt",
        "turn_id": "t1",
        "heard_text": f"{chunks[0]} I am the",
    }
    assert await ui.sent("playback.ack") == [{"type": "playback.ack", "turn_id": "t1", "index": 0}]
    assert await ui.eval("__tts.cancels") == 1
    assert await ui.eval("__tts.current") is None
    await expect(stop).to_be_hidden()
    await expect(ui.page.locator("#talk")).to_have_attribute("aria-pressed", "true")
    await ui.page.keyboard.up("Space")  # nothing was said: nothing is sent
    await expect(ui.page.locator("#talk")).to_have_attribute("aria-pressed", "false")
    # The gateway cut its history to what was heard; the page shows the cut.
    await expect(ui.turn("t1").locator(".meta")).to_have_text("Interrupted: kept what you heard")
    await expect(ui.turn("t1").locator(".chunk--unheard")).to_have_count(2)
    await expect(ui.turn("t1").locator(".chunk__unheard")).to_have_text(
        [chunks[1].removeprefix("I am the")]
    )

    # Typing while it speaks is a barge-in too.
    await ui.type_message("And another thing")
    await ui.wait_turn("t2")
    await ui.page.wait_for_function("window.__tts.spoken.length === 8")
    await ui.page.locator("#message").press_sequentially("W")
    await ui.page.wait_for_function(
        "window.__sent.filter(f => f.type === 'interrupt').length === 2"
    )
    assert (await ui.sent("interrupt"))[1] == {
        "type": "interrupt",
        "turn_id": "t2",
        "heard_text": "",
    }
    assert await ui.eval("__tts.cancels") == 2
    assert len(await ui.sent("user.message")) == 2


async def test_the_language_drives_the_session_speech_and_recognition(
    gateway: RunningServer, open_ui: OpenUi
) -> None:
    ui = await open_ui(gateway.http_url)
    await ui.page.get_by_label("Language").select_option("es-ES")
    await ui.page.wait_for_function(
        "window.__sent.some(f => f.type === 'session.update' && f.language === 'es-ES')"
    )
    voice = ui.page.get_by_label("Voice")
    await expect(voice.locator("option")).to_have_text(
        ["Automatic", "Prueba Español (es-ES)", "Prueba México (es-MX)"]
    )
    await voice.select_option("test-es-mx")
    await ui.page.get_by_label("Speed").fill("1.5")
    await ui.page.get_by_label("Volume").fill("0.5")

    await ui.type_message("Hello")
    await ui.wait_turn("t1")
    chunks = await ui.chunk_list("t1")
    assert chunks[0][1] == "Has dicho: «Hello»."
    spoken = await ui.spoken()
    assert len(spoken) == len(chunks)
    assert {(s["lang"], s["voice"], s["rate"], s["volume"]) for s in spoken} == {
        ("es-ES", "Prueba México", 1.5, 0.5)
    }

    await ui.focus_nothing()
    await ui.page.keyboard.down("Space")
    await ui.page.wait_for_function("window.__stt.active !== null")
    assert await ui.eval("__stt.lang") == "es-ES"
    await ui.page.keyboard.up("Space")

    await ui.reload()  # remembered in localStorage
    await expect(ui.page.get_by_label("Language")).to_have_value("es-ES")
    await expect(voice).to_have_value("test-es-mx")
    await expect(ui.page.get_by_label("Speed")).to_have_value("1.5")
    await expect(ui.page.get_by_label("Volume")).to_have_value("0.5")
    assert await ui.page.locator("#transcript").get_attribute("lang") == "es-ES"


async def test_a_reload_resumes_the_same_session(gateway: RunningServer, open_ui: OpenUi) -> None:
    ui = await open_ui(gateway.http_url)
    session_id = await ui.session_id()
    await ui.type_message("Remember me")
    await ui.wait_turn("t1")
    before = await ui.chunk_list("t1")

    await ui.reload()
    assert await ui.session_id() == session_id
    await ui.wait_turn("t1")
    await expect(ui.user_turns).to_have_text(["You said: Remember me"])
    await expect(ui.assistant_turns).to_have_count(1)
    assert await ui.chunk_list("t1") == before
    (socket,) = await ui.sockets()
    assert f"session_id={session_id}" in socket
    assert socket.endswith("last_seq=0")  # replayed from the start to rebuild the transcript
    assert await ui.spoken() == []  # what was said before the reload is not said again
    assert await ui.sent("user.message") == []  # it was answered: nothing to resend

    await ui.type_message("And now?")
    await ui.wait_turn("t2")
    assert "This is message 2 of our conversation" in " ".join(
        text for _, text in await ui.chunk_list("t2")
    )


async def test_a_reload_mid_turn_shows_every_chunk_once_and_does_not_speak_old_ones(
    slow_gateway: RunningServer, open_ui: OpenUi
) -> None:
    ui = await open_ui(slow_gateway.http_url)
    session_id = await ui.session_id()
    await ui.type_message("Please tell me a long story about a lighthouse keeper and her cat")
    await expect(ui.chunks("t1")).not_to_have_count(0)

    await ui.reload()  # the turn goes on streaming meanwhile (grace window)
    await ui.wait_turn("t1", within_ms=15_000)
    chunks = await ui.chunk_list("t1")
    assert [index for index, _ in chunks] == list(range(len(chunks)))
    async with httpx.AsyncClient() as client:
        record = (await client.get(f"{slow_gateway.http_url}/sessions/{session_id}")).json()
    assert " ".join(text for _, text in chunks) == record["turns"][0]["text"]
    await expect(ui.user_turns).to_have_count(1)
    # A turn that began before the reload is shown, not read aloud from the middle.
    assert await ui.spoken() == []
    assert await ui.session_id() == session_id


async def test_new_conversation_starts_a_fresh_session(
    gateway: RunningServer, open_ui: OpenUi
) -> None:
    ui = await open_ui(gateway.http_url)
    session_id = await ui.session_id()
    await ui.type_message("First")
    await ui.wait_turn("t1")

    await ui.page.get_by_role("button", name="New conversation").click()
    await expect(ui.page.locator("#empty")).to_be_visible()
    await expect(ui.assistant_turns).to_have_count(0)
    await expect(ui.page.locator("body")).not_to_have_attribute("data-session-id", session_id)
    await ui.connected()
    assert await ui.session_id() != session_id
    assert await ui.sent("session.end") == [{"type": "session.end"}]

    await ui.type_message("Second")
    await ui.wait_turn("t1")
    assert "This is the first message" in " ".join(text for _, text in await ui.chunk_list("t1"))
    await expect(ui.user_turns).to_have_count(1)


async def test_space_bar_talks_except_while_typing(gateway: RunningServer, open_ui: OpenUi) -> None:
    ui = await open_ui(gateway.http_url)
    talk = ui.page.locator("#talk")
    box = ui.page.locator("#message")
    await box.focus()
    await ui.page.keyboard.press("Space")
    await expect(box).to_have_value(" ")
    assert await ui.eval("__stt.starts") == 0
    await expect(talk).to_have_attribute("aria-pressed", "false")
    await box.fill("")

    await ui.focus_nothing()
    await ui.page.keyboard.down("Space")
    await expect(talk).to_have_attribute("aria-pressed", "true")
    await expect(ui.page.locator("#live")).to_be_visible()
    await ui.page.wait_for_function("window.__stt.active !== null")
    # The level meter follows the microphone (a test tone here).
    await ui.page.wait_for_function(
        "Number(getComputedStyle(document.getElementById('talk')).getPropertyValue('--level')) > 0"
    )
    await ui.eval("__stt.say('turn on the', false)")
    await expect(ui.page.locator("#interim")).to_have_text("turn on the")
    await ui.eval("__stt.say('turn on the lights', true)")
    await ui.page.keyboard.up("Space")

    await expect(ui.user_turns).to_have_text(["You said: turn on the lights"])
    await ui.wait_turn("t1")
    await expect(ui.page.locator("#live")).to_be_hidden()
    assert [m["text"] for m in await ui.sent("user.message")] == ["turn on the lights"]

    # Keyboard only: Enter on the focused talk button starts listening, Enter again sends.
    await talk.focus()
    await ui.page.keyboard.press("Enter")
    await expect(talk).to_have_attribute("aria-pressed", "true")
    await ui.page.wait_for_function("window.__stt.active !== null")
    await ui.eval("__stt.say('second try', true)")
    await ui.page.keyboard.press("Enter")
    await expect(ui.user_turns).to_have_count(2)
    await ui.wait_turn("t2")


async def test_without_speech_recognition_the_text_box_is_the_way_in(
    gateway: RunningServer, open_ui: OpenUi
) -> None:
    ui = await open_ui(gateway.http_url, recognition=False)
    notice = ui.page.locator('.notice[data-key="voice"]')
    await expect(notice).to_contain_text("This browser cannot turn speech into text")
    await expect(ui.page.locator("#talk")).to_be_disabled()
    await expect(ui.page.locator("#message")).to_be_visible()
    await ui.type_message("Typing works")
    await ui.wait_turn("t1")
    assert [m["text"] for m in await ui.sent("user.message")] == ["Typing works"]


async def test_a_denied_microphone_is_explained(gateway: RunningServer, open_ui: OpenUi) -> None:
    ui = await open_ui(gateway.http_url, mic_denied=True)
    await ui.focus_nothing()
    await ui.page.keyboard.down("Space")
    notice = ui.page.locator('.notice[data-key="voice"]')
    await expect(notice).to_contain_text("Microphone access is blocked.")
    await expect(notice).to_have_attribute("role", "alert")
    await ui.page.keyboard.up("Space")
    await expect(ui.page.locator("#talk")).to_have_attribute("aria-pressed", "false")
    assert await ui.sent("user.message") == []


async def test_a_provider_failure_is_explained_and_can_be_retried(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini, open_ui: OpenUi
) -> None:
    gateway = start_gateway(
        GEMINI_API_KEY="test-key-not-secret",
        GEMINI_BASE_URL=fake_gemini.url,
        GEMINI_MODEL="gemini-test",
        GATEWAY_PROVIDER_RETRIES=0,
    )
    fake_gemini.fail(503)
    ui = await open_ui(gateway.http_url)
    await ui.type_message("Are you there?")
    await ui.wait_turn("t1", "failed")
    await expect(ui.turn("t1").locator(".meta")).to_contain_text("Failed")
    notice = ui.page.locator('.notice[data-key="turn"]')
    await expect(notice).to_contain_text("The AI provider is unavailable right now.")

    fake_gemini.reply("Yes, I am here.")
    await notice.get_by_role("button", name="Try again").click()
    await ui.wait_turn("t2")
    assert await ui.chunk_list("t2") == [(0, "Yes, I am here.")]
    await expect(notice).to_have_count(0)


async def test_a_conversation_opened_in_another_window_is_said_so(
    gateway: RunningServer, open_ui: OpenUi
) -> None:
    first = await open_ui(gateway.http_url)
    session_id = await first.session_id()
    await first.type_message("Hello from the first window")
    await first.wait_turn("t1")

    # window.open copies sessionStorage: the new window resumes the same session.
    async with first.page.context.expect_page() as opened:
        await first.eval("window.open(location.href)")
    second = open_ui.adopt(await opened.value, gateway.http_url)
    await second.connected()
    assert await second.session_id() == session_id
    await second.wait_turn("t1")

    notice = first.page.locator('.notice[data-key="connection"]')
    await expect(notice).to_contain_text("opened in another tab or window")
    await expect(first.page.locator("#status")).to_contain_text("Open elsewhere")
    await notice.get_by_role("button", name="Continue here").click()
    await first.connected()
    await expect(second.page.locator('.notice[data-key="connection"]')).to_be_visible()
    await first.type_message("I am back here")
    await first.wait_turn("t2")


async def test_a_deleted_session_ends_and_a_new_one_takes_over(
    gateway: RunningServer, open_ui: OpenUi
) -> None:
    ui = await open_ui(gateway.http_url)
    first_id = await ui.session_id()
    await ui.type_message("Hello")
    await ui.wait_turn("t1")
    await delete_session(gateway, first_id)
    await expect(ui.page.locator("#status")).to_have_attribute("data-state", "ended")
    await expect(ui.page.locator('.notice[data-key="session"]')).to_contain_text(
        "This conversation has ended."
    )

    await ui.type_message("Hello again")  # the next message starts a new conversation
    await ui.wait_turn("t1")
    second_id = await ui.session_id()
    assert second_id != first_id
    await expect(ui.user_turns).to_have_text(["You said: Hello again"])
    assert "This is the first message" in " ".join(text for _, text in await ui.chunk_list("t1"))

    await delete_session(gateway, second_id)
    await expect(ui.page.locator("#status")).to_have_attribute("data-state", "ended")
    await ui.reload()  # the stored session is gone (4404): a new one starts, and the page says so
    await expect(ui.page.locator('.notice[data-key="session"]')).to_contain_text(
        "could not be resumed"
    )
    assert await ui.session_id() not in (first_id, second_id)
    await expect(ui.assistant_turns).to_have_count(0)


async def delete_session(gateway: RunningServer, session_id: str) -> None:
    async with httpx.AsyncClient() as client:
        deleted = await client.delete(f"{gateway.http_url}/sessions/{session_id}")
    assert deleted.status_code == 204


async def test_the_layout_holds_at_phone_width_and_in_the_dark_theme(
    gateway: RunningServer, open_ui: OpenUi, tmp_path: Path
) -> None:
    ui = await open_ui(gateway.http_url, viewport=PHONE)
    await stage_conversation(ui)  # two turns; the first stopped with Esc
    await expect(ui.turn("t1").locator(".meta")).to_have_text("Interrupted: kept what you heard")
    assert await ui.eval("document.documentElement.scrollWidth") <= PHONE["width"]
    for selector in ("#talk", "#message", "#composer button", "#new-conversation", "#status"):
        box = await ui.page.locator(selector).bounding_box()
        assert box is not None, selector
        assert box["x"] >= 0, selector
        assert box["x"] + box["width"] <= PHONE["width"], selector
        assert box["y"] + box["height"] <= PHONE["height"], selector
    await ui.page.screenshot(path=str(tmp_path / "phone.png"))

    light = await ui.eval("getComputedStyle(document.body).backgroundColor")
    toggle = ui.page.locator("#theme-toggle")
    await expect(toggle).to_have_attribute("aria-pressed", "false")
    await toggle.click()
    await expect(ui.page.locator("html")).to_have_attribute("data-theme", "dark")
    await expect(toggle).to_have_attribute("aria-pressed", "true")
    dark = await ui.eval("getComputedStyle(document.body).backgroundColor")
    assert dark != light
    await ui.reload()  # remembered
    await expect(ui.page.locator("html")).to_have_attribute("data-theme", "dark")
    await expect(toggle).to_have_attribute("aria-pressed", "true")
    await ui.page.screenshot(path=str(tmp_path / "phone-dark.png"))


async def test_the_connection_dedupes_resends_and_obeys_close_codes(
    gateway: RunningServer, open_ui: OpenUi
) -> None:
    """web/connection.js on its own, with a fake WebSocket (connection_scenario.js)."""
    ui = await open_ui(gateway.http_url)
    result = await ui.page.evaluate(CONNECTION_SCENARIO)
    urls = result["urls"]
    assert urls[0] == "ws://gateway.test/ws"
    assert urls[1] == "ws://gateway.test/ws?session_id=s1&resume_token=tok&last_seq=2"
    assert result["stateAfterDrop"] == "waiting"  # 1006: reconnect after a back-off
    assert result["processed"] == [1, 2, 3, 4]  # each seq once, the replayed 1 and 2 dropped
    (resent,) = result["resent"]  # unanswered after the resume: sent again, same id
    assert resent["text"] == "hello"
    assert UUID.match(resent["id"])
    assert result["secondSent"] == ["user.message", "ping"]
    # 4409: taken over, no reconnect until asked.
    assert result["afterTakeover"] == {"state": "taken-over", "sockets": 2}
    assert urls[2] == "ws://gateway.test/ws?session_id=s1&resume_token=tok&last_seq=4"
    assert result["resentAfterAnswer"] == 0  # answered by t2: not sent again
    # 4404: the session is forgotten and a new one starts.
    assert result["resets"] == [4404]
    assert urls[3] == "ws://gateway.test/ws"
    assert result["stored"] is None
    assert result["finalState"] == "connecting"
