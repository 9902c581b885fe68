"""GeminiProvider against the real google-genai SDK and a fake Gemini HTTP server."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator

import httpx2
import pytest
from google import genai
from google.genai import _api_client, types

from gateway.core.history import (
    Finish,
    GenerationRequest,
    GenerationSettings,
    Message,
    StreamItem,
    Usage,
)
from gateway.providers.base import LLMProvider, ProviderError
from gateway.providers.gemini import (
    SPEAK_NOW,
    SPEAK_NOW_WITH_INSTRUCTIONS,
    GeminiProvider,
    voice_thinking,
)
from tests.support.fake_gemini import (
    FakeGemini,
    finish_event,
    prompt_blocked_event,
    split_text,
    text_event,
    wait_event,
)

API_KEY = "AIza-test-secret-key-0123456789"
MODEL = "gemini-test-flash"
USER_TEXT = "my secret address is 42 Elm Street"


def make_request(
    *messages: Message,
    system: str | None = "You are a helpful voice assistant.",
    instructions: str | None = None,
    settings: GenerationSettings | None = None,
) -> GenerationRequest:
    return GenerationRequest(
        session_id="sess-1",
        turn_id="turn-1",
        system_instruction=system,
        messages=messages,
        instructions=instructions,
        settings=settings or GenerationSettings(),
    )


def user(text: str) -> Message:
    return Message("user", text)


def assistant(text: str) -> Message:
    return Message("assistant", text)


@pytest.fixture(autouse=True)
def _sdk_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads GOOGLE_GENAI_* (API version, HTTP library...): use its defaults."""
    for name in list(os.environ):
        if name.startswith("GOOGLE_GENAI_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def provider(fake_gemini: FakeGemini) -> AsyncIterator[GeminiProvider]:
    gemini = GeminiProvider(api_key=API_KEY, model=MODEL, base_url=fake_gemini.url, timeout_s=5)
    yield gemini
    await gemini.aclose()


async def collect_items(provider: GeminiProvider, request: GenerationRequest) -> list[StreamItem]:
    return [item async for item in provider.stream(request)]


async def collect(provider: GeminiProvider, request: GenerationRequest) -> list[str]:
    """The text deltas only."""
    return [item for item in await collect_items(provider, request) if isinstance(item, str)]


async def finish_of(provider: GeminiProvider, request: GenerationRequest) -> Finish | None:
    items = await collect_items(provider, request)
    finishes = [item for item in items if isinstance(item, Finish)]
    assert len(finishes) <= 1
    assert not finishes or items[-1] is finishes[0], "Finish comes last"
    return finishes[0] if finishes else None


async def collect_until_error(
    provider: GeminiProvider, request: GenerationRequest
) -> tuple[list[str], ProviderError]:
    deltas: list[str] = []

    async def drain() -> None:
        async for delta in provider.stream(request):
            if isinstance(delta, str):
                deltas.append(delta)

    with pytest.raises(ProviderError) as caught:
        await drain()
    return deltas, caught.value


def assert_private(error: ProviderError) -> None:
    for text in (str(error), error.message, repr(error)):
        assert API_KEY not in text
        assert USER_TEXT not in text


# -- streaming and request shape --------------------------------------------------


async def test_streams_reply_as_several_deltas_in_order(fake_gemini, provider):
    text = "Hello there. How are you?"
    fake_gemini.reply(text, chunk_size=5)

    deltas = await collect(provider, make_request(user("hi")))

    assert deltas == split_text(text, 5)
    assert len(deltas) == 5


async def test_provider_satisfies_protocol_and_names(provider):
    checked: LLMProvider = provider
    assert checked.name == "gemini"
    assert checked.model == MODEL


async def test_request_carries_model_system_instruction_and_merged_history(fake_gemini, provider):
    request = make_request(
        user("Hi."),
        user("Are you there?"),
        assistant("Yes."),
        assistant("How can I help?"),
        user("Tell me a joke."),
    )

    await collect(provider, request)

    [sent] = fake_gemini.wait_for_requests(1)
    assert sent.path == f"/v1/models/{MODEL}:streamGenerateContent"
    assert sent.model == MODEL
    assert sent.query == {"alt": "sse"}
    assert sent.headers["x-goog-api-key"] == API_KEY
    assert sent.system_text == "You are a helpful voice assistant."
    assert sent.turns == [
        ("user", ["Hi.", "Are you there?"]),
        ("model", ["Yes.", "How can I help?"]),
        ("user", ["Tell me a joke."]),
    ]
    assert request.messages[0] == user("Hi.")  # the request itself is untouched


async def test_turn_instructions_extend_system_instruction(fake_gemini, provider):
    await collect(provider, make_request(user("What time is it?"), instructions="Answer briefly."))

    [sent] = fake_gemini.wait_for_requests(1)
    assert sent.system_text == (
        "You are a helpful voice assistant.\n\nInstructions for this turn:\nAnswer briefly."
    )
    assert sent.turns == [("user", ["What time is it?"])]


async def test_assistant_started_turn_asks_model_to_speak(fake_gemini, provider):
    fake_gemini.reply("Welcome!")

    deltas = await collect(
        provider, make_request(system=None, instructions="Greet the caller by name: Ada.")
    )

    assert "".join(deltas) == "Welcome!"
    [sent] = fake_gemini.wait_for_requests(1)
    assert sent.system_text == "Instructions for this turn:\nGreet the caller by name: Ada."
    assert sent.turns == [("user", [SPEAK_NOW_WITH_INSTRUCTIONS])]


async def test_history_ending_with_assistant_gets_a_user_nudge(fake_gemini, provider):
    await collect(provider, make_request(user("Hi"), assistant("Hello!"), assistant("")))

    [sent] = fake_gemini.wait_for_requests(1)
    assert sent.turns == [("user", ["Hi"]), ("model", ["Hello!"]), ("user", [SPEAK_NOW])]


async def test_second_call_carries_history_passed_in(fake_gemini, provider):
    first = make_request(user("What is two plus two?"))
    reply = "".join(await collect(provider, first))
    assert reply == "You said: What is two plus two?. That is all."

    second = make_request(user("What is two plus two?"), assistant(reply), user("And times three?"))
    await collect(provider, second)

    one, two = fake_gemini.wait_for_requests(2)
    assert one.turns == [("user", ["What is two plus two?"])]
    assert two.turns == [
        ("user", ["What is two plus two?"]),
        ("model", [reply]),
        ("user", ["And times three?"]),
    ]


async def test_thought_parts_and_empty_responses_are_skipped(fake_gemini, provider):
    fake_gemini.reply_events(
        [
            text_event("thinking about it", thought=True),
            {"candidates": [], "modelVersion": "fake-gemini"},
            {"usageMetadata": {"promptTokenCount": 3}},
            text_event(""),
            text_event("Sure."),
            finish_event("STOP"),
        ]
    )

    assert await collect(provider, make_request(user("hi"))) == ["Sure."]


# -- finish reasons, blocked replies and usage -----------------------------------


async def test_blocked_prompt_finishes_blocked(fake_gemini, provider):
    fake_gemini.reply_events([prompt_blocked_event("SAFETY")])

    items = await collect_items(provider, make_request(user(USER_TEXT)))

    assert items == [Finish("blocked", raw="prompt SAFETY")]


@pytest.mark.parametrize(
    "reason",
    ["SAFETY", "MODEL_ARMOR", "LANGUAGE", "PROHIBITED_CONTENT", "SPII", "BLOCKLIST", "RECITATION"],
)
async def test_blocking_finish_reasons_without_text_finish_blocked(fake_gemini, provider, reason):
    fake_gemini.reply_events([finish_event(reason)])

    assert await finish_of(provider, make_request(user("hi"))) == Finish("blocked", raw=reason)


async def test_safety_finish_after_text_still_finishes_blocked(fake_gemini, provider):
    fake_gemini.reply_events([text_event("Well, "), finish_event("SAFETY")])

    items = await collect_items(provider, make_request(user("hi")))

    assert items == ["Well, ", Finish("blocked", raw="SAFETY")]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "max_tokens"),
        ("OTHER", "other"),
        ("MALFORMED_FUNCTION_CALL", "other"),
        ("FINISH_REASON_UNSPECIFIED", "other"),
    ],
)
async def test_finish_reasons_are_mapped(fake_gemini, provider, raw, reason):
    fake_gemini.reply_chunks(["Once upon ", "a time"], finish_reason=raw)

    assert await finish_of(provider, make_request(user("hi"))) == Finish(reason, raw=raw)


async def test_a_stream_without_a_finish_reason_yields_no_finish(fake_gemini, provider):
    fake_gemini.reply_events([text_event("Hi")])

    assert await collect_items(provider, make_request(user("hi"))) == ["Hi"]


async def test_usage_metadata_is_reported_once_after_the_text(fake_gemini, provider):
    usage = {
        "promptTokenCount": 120,
        "candidatesTokenCount": 9,
        "thoughtsTokenCount": 30,
        "cachedContentTokenCount": 100,
        "totalTokenCount": 159,
    }
    fake_gemini.reply_events(
        [
            {**text_event("Hello "), "usageMetadata": {"promptTokenCount": 120}},
            {**text_event("there.", finish_reason="STOP"), "usageMetadata": usage},
        ]
    )

    items = await collect_items(provider, make_request(user("hi")))

    assert items == [
        "Hello ",
        "there.",
        Usage(
            input_tokens=120,
            output_tokens=9,
            total_tokens=159,
            cached_tokens=100,
            thinking_tokens=30,
        ),
        Finish("stop", raw="STOP"),
    ]


# -- generation settings ------------------------------------------------------------


async def test_generation_settings_reach_the_request(fake_gemini, provider):
    settings = GenerationSettings(temperature=0.3, max_output_tokens=64, thinking_level="medium")

    await collect(provider, make_request(user("hi"), settings=settings))

    [sent] = fake_gemini.wait_for_requests(1)
    assert sent.body["generationConfig"] == {
        "temperature": 0.3,
        "maxOutputTokens": 64,
        "thinkingConfig": {"thinking_level": "MEDIUM"},  # the SDK's own casing; both parse
    }


async def test_a_thinking_budget_is_sent_as_a_budget(fake_gemini, provider):
    await collect(
        provider, make_request(user("hi"), settings=GenerationSettings(thinking_budget=512))
    )

    [sent] = fake_gemini.wait_for_requests(1)
    assert sent.body["generationConfig"] == {"thinkingConfig": {"thinking_budget": 512}}


async def test_without_thinking_settings_a_flash_model_thinks_minimally(fake_gemini):
    gemini = GeminiProvider(api_key=API_KEY, model="gemini-3.8-flash", base_url=fake_gemini.url)
    try:
        await collect(gemini, make_request(user("hi")))
    finally:
        await gemini.aclose()

    [sent] = fake_gemini.wait_for_requests(1)
    assert sent.body["generationConfig"] == {"thinkingConfig": {"thinking_level": "MINIMAL"}}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gemini-3.8-flash", {"thinking_level": "MINIMAL"}),
        ("gemini-3-flash-preview", {"thinking_level": "MINIMAL"}),
        ("gemini-3.1-flash-lite", {"thinking_level": "MINIMAL"}),
        ("gemini-3.1-pro-preview", {"thinking_level": "LOW"}),
        ("gemini-2.5-flash", {"thinking_budget": 0}),
        ("gemini-2.5-flash-lite", {"thinking_budget": 0}),
        ("gemini-2.5-pro", None),
        ("gemini-2.0-flash", None),
        ("models/gemini-3-flash-preview", {"thinking_level": "MINIMAL"}),
        ("gemma-3-27b-it", None),
    ],
)
def test_voice_thinking_is_the_lowest_latency_setting_each_model_accepts(model, expected):
    config = voice_thinking(model)
    got = None if config is None else config.model_dump(exclude_none=True, mode="json")
    assert got == expected


# -- HTTP errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (429, "rate_limited", True),
        (500, "unavailable", True),
        (503, "unavailable", True),
        (400, "bad_request", False),
        (404, "model_not_found", False),
        (401, "auth_failed", False),
        (403, "auth_failed", False),
    ],
)
async def test_http_errors_are_translated_without_sdk_retry(
    fake_gemini, provider, status, code, retryable
):
    # The server message echoes the prompt, as real ones sometimes do: it must not leak.
    fake_gemini.fail(status, message=f"cannot handle {USER_TEXT!r} for key {API_KEY}")

    deltas, error = await collect_until_error(provider, make_request(user(USER_TEXT)))

    assert deltas == []
    assert (error.code, error.retryable, error.status) == (code, retryable, status)
    assert_private(error)
    # Any SDK-level retry would have happened before the error reached us.
    assert len(fake_gemini.requests) == 1


async def test_a_wrong_api_key_is_auth_failed_and_says_to_check_the_key(fake_gemini, provider):
    fake_gemini.bad_key()

    _, error = await collect_until_error(provider, make_request(user(USER_TEXT)))

    assert (error.code, error.retryable, error.status) == ("auth_failed", False, 400)
    assert "check GEMINI_API_KEY" in error.message
    assert_private(error)


async def test_an_unknown_model_says_which_setting_to_check(fake_gemini, provider):
    fake_gemini.fail(404, f"models/{MODEL} is not found for API version v1")

    _, error = await collect_until_error(provider, make_request(user("hi")))

    assert error.code == "model_not_found"
    assert MODEL in error.message
    assert "GEMINI_MODEL" in error.message


async def test_error_event_mid_stream_is_translated(fake_gemini, provider):
    fake_gemini.reply_events(
        [
            text_event("Hel"),
            {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}},
        ]
    )

    deltas, error = await collect_until_error(provider, make_request(user("hi")))

    assert deltas == ["Hel"]
    assert (error.code, error.retryable, error.status) == ("unavailable", True, 503)


async def test_logs_carry_no_key_and_no_text(fake_gemini, provider, caplog):
    caplog.set_level(logging.DEBUG, logger="gateway.providers.gemini")
    fake_gemini.fail(500, message=f"echo {USER_TEXT}")

    await collect_until_error(provider, make_request(user(USER_TEXT)))

    records = [r for r in caplog.records if r.name == "gateway.providers.gemini"]
    assert records, "the failure should be logged"
    for record in records:
        assert API_KEY not in record.getMessage()
        assert USER_TEXT not in record.getMessage()


# -- transport failures -------------------------------------------------------------


async def test_connection_cut_mid_stream_is_connection_lost(fake_gemini, provider):
    script = fake_gemini.cut_after(["Hello ", "there"])

    deltas, error = await collect_until_error(provider, make_request(user(USER_TEXT)))

    assert deltas == ["Hello ", "there"]
    assert (error.code, error.retryable, error.status) == ("connection_lost", True, None)
    assert_private(error)
    assert script.finished.is_set()
    assert len(fake_gemini.requests) == 1  # no SDK reconnect / continuation


async def test_malformed_sse_is_bad_response(fake_gemini, provider):
    fake_gemini.malformed(after_chunks=["Hi"], raw=f"data: {{{USER_TEXT}\r\n\r\n".encode())

    deltas, error = await collect_until_error(provider, make_request(user("hi")))

    assert deltas == ["Hi"]
    assert (error.code, error.retryable) == ("bad_response", False)
    assert_private(error)


async def test_json_of_the_wrong_shape_is_bad_response(fake_gemini, provider):
    fake_gemini.reply_events([{"candidates": [{"content": {"parts": "not a list"}}]}])

    _, error = await collect_until_error(provider, make_request(user("hi")))

    assert (error.code, error.retryable) == ("bad_response", False)


async def test_silence_beyond_timeout_is_timeout(fake_gemini):
    script = fake_gemini.stall(after_chunks=["Hi"])
    gemini = GeminiProvider(api_key=API_KEY, model=MODEL, base_url=fake_gemini.url, timeout_s=0.3)
    try:
        deltas, error = await collect_until_error(gemini, make_request(user("hi")))
    finally:
        await gemini.aclose()

    assert deltas == ["Hi"]
    assert (error.code, error.retryable) == ("timeout", True)
    assert await wait_event(script.client_gone)


@pytest.mark.parametrize("library", ["httpx2", "httpx", "auto"])
async def test_the_http_library_is_pinned_to_httpx2_whatever_the_environment_says(
    fake_gemini, monkeypatch, library
):
    monkeypatch.setenv("GOOGLE_GENAI_HTTP_CLIENT", library)
    gemini = GeminiProvider(api_key=API_KEY, model=MODEL, base_url=fake_gemini.url, timeout_s=0.3)
    try:
        fake_gemini.cut_after(["a"])
        _, cut = await collect_until_error(gemini, make_request(user("hi")))
        fake_gemini.stall(after_chunks=["b"])
        _, silent = await collect_until_error(gemini, make_request(user("hi")))
    finally:
        await gemini.aclose()

    assert (cut.code, silent.code) == ("connection_lost", "timeout")
    for error in (cut, silent):
        assert type(error.__cause__).__module__.split(".")[0] == "httpx2"


async def test_an_installed_aiohttp_changes_nothing(fake_gemini, monkeypatch):
    # The SDK switches to aiohttp whenever it can import it; pretend it can. Were
    # the provider not pinned to its own httpx2 client, the SDK would now reach for
    # aiohttp (not installed here) and every call would fail.
    monkeypatch.setattr(_api_client, "has_aiohttp", True)
    gemini = GeminiProvider(api_key=API_KEY, model=MODEL, base_url=fake_gemini.url, timeout_s=0.3)
    try:
        fake_gemini.reply_chunks(["slow ", "but ", "steady"], delay_s=0.2)
        steady = await collect(gemini, make_request(user("hi")))
        fake_gemini.cut_after(["a"])
        _, cut = await collect_until_error(gemini, make_request(user("hi")))
    finally:
        await gemini.aclose()

    assert steady == ["slow ", "but ", "steady"]
    assert (cut.code, cut.retryable) == ("connection_lost", True)


async def test_refused_connection_is_connection_lost():
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gemini = GeminiProvider(api_key=API_KEY, model=MODEL, base_url=f"http://127.0.0.1:{port}")
    try:
        _, error = await collect_until_error(gemini, make_request(user("hi")))
    finally:
        await gemini.aclose()

    assert (error.code, error.retryable) == ("connection_lost", True)
    assert_private(error)


# -- closing ---------------------------------------------------------------------


async def test_cancelling_the_consumer_closes_the_http_stream(fake_gemini, provider):
    script = fake_gemini.stall(after_chunks=["One", "Two"])
    got_first = asyncio.Event()
    deltas: list[str] = []

    async def consume() -> None:
        async for delta in provider.stream(make_request(user("hi"))):
            deltas.append(delta)
            got_first.set()

    task = asyncio.create_task(consume())
    await got_first.wait()
    assert not script.client_gone.is_set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await wait_event(script.client_gone)
    assert deltas[0] == "One"


async def test_aclose_of_the_stream_between_deltas_closes_the_http_stream(fake_gemini, provider):
    script = fake_gemini.stall(after_chunks=["One", "Two"])
    stream = provider.stream(make_request(user("hi")))

    assert await anext(stream) == "One"
    await stream.aclose()

    assert await wait_event(script.client_gone)


async def test_leaving_a_paced_reply_early_is_seen_by_the_server(fake_gemini, provider):
    script = fake_gemini.reply_chunks(["One", "Two", "Three"], delay_s=0.05)
    stream = provider.stream(make_request(user("hi")))

    assert await anext(stream) == "One"
    await stream.aclose()

    assert await wait_event(script.client_gone)
    assert fake_gemini.client_gone.is_set()


async def test_provider_keeps_working_after_a_closed_stream(fake_gemini, provider):
    fake_gemini.stall(after_chunks=["One"])
    stream = provider.stream(make_request(user("hi")))
    assert await anext(stream) == "One"
    await stream.aclose()

    fake_gemini.reply("Still here.")
    assert "".join(await collect(provider, make_request(user("hi")))) == "Still here."


async def test_aclose_closes_the_client(fake_gemini):
    gemini = GeminiProvider(api_key=API_KEY, model=MODEL, base_url=fake_gemini.url)
    assert await collect(gemini, make_request(user("a"))) == [
        "You said: ",
        "a.",
        " That is all.",
    ]

    await gemini.aclose()

    _, error = await collect_until_error(gemini, make_request(user("b")))
    assert (error.code, error.retryable) == ("provider_error", False)
    assert len(fake_gemini.requests) == 1


# -- the fake itself -----------------------------------------------------------------


async def test_fake_serves_non_streaming_generate_content(fake_gemini):
    http = httpx2.AsyncClient()  # pinned, as the provider does, whatever is installed
    client = genai.Client(
        vertexai=False,
        api_key=API_KEY,
        http_options=types.HttpOptions(base_url=fake_gemini.url, httpx_async_client=http),
    )
    try:
        fake_gemini.reply("Plain answer.", chunk_size=4)
        response = await client.aio.models.generate_content(model=MODEL, contents="hi")
        assert response.candidates is not None
        assert response.candidates[0].content is not None
        parts = response.candidates[0].content.parts or []
        assert "".join(p.text or "" for p in parts) == "Plain answer."
        assert fake_gemini.wait_for_requests(1)[0].action == "generateContent"
    finally:
        await client.aio.aclose()
        client.close()
        await http.aclose()
