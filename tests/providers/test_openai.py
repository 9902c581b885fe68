"""OpenAIProvider against the real openai SDK and a fake OpenAI-compatible HTTP server."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import openai
import pytest

from gateway.core.history import (
    Finish,
    GenerationRequest,
    GenerationSettings,
    Message,
    StreamItem,
    Usage,
)
from gateway.providers.base import SPEAK_NOW, LLMProvider, ProviderError
from gateway.providers.openai import NO_KEY, OpenAIProvider
from tests.support.fake_gemini import wait_event
from tests.support.fake_openai import FakeOpenAI, chunk, usage_chunk

API_KEY = "sk-test-secret-key-0123456789"
MODEL = "llama-test-8b"
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


def make_provider(fake: FakeOpenAI, **kwargs: object) -> OpenAIProvider:
    options: dict[str, object] = {
        "api_key": API_KEY,
        "model": MODEL,
        "base_url": fake.url,
        "timeout_s": 5,
        **kwargs,
    }
    return OpenAIProvider(**options)  # type: ignore[arg-type]


@pytest.fixture
async def provider(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAIProvider]:
    llm = make_provider(fake_openai)
    yield llm
    await llm.aclose()


async def items_of(provider: OpenAIProvider, request: GenerationRequest) -> list[StreamItem]:
    return [item async for item in provider.stream(request)]


async def texts_of(provider: OpenAIProvider, request: GenerationRequest) -> list[str]:
    return [i for i in await items_of(provider, request) if isinstance(i, str)]


async def until_error(
    provider: OpenAIProvider, request: GenerationRequest
) -> tuple[list[str], ProviderError]:
    texts: list[str] = []

    async def drain() -> None:
        async for item in provider.stream(request):
            if isinstance(item, str):
                texts.append(item)

    with pytest.raises(ProviderError) as caught:
        await drain()
    return texts, caught.value


def assert_private(error: ProviderError) -> None:
    for text in (str(error), error.message, repr(error)):
        assert API_KEY not in text
        assert USER_TEXT not in text


# -- streaming, usage, finish reasons, request shape ----------------------------------


async def test_streams_text_then_usage_then_finish(fake_openai, provider):
    fake_openai.reply(["Hello ", "there. ", "How are you?"], usage=(42, 7))

    items = await items_of(provider, make_request(user("hi")))

    assert items == [
        "Hello ",
        "there. ",
        "How are you?",
        Usage(input_tokens=42, output_tokens=7, total_tokens=49),
        Finish("stop", raw="stop"),
    ]


async def test_cached_and_reasoning_tokens_are_reported(fake_openai, provider):
    fake_openai.reply_raw(
        [
            chunk("Hi.", finish_reason="stop"),
            usage_chunk(100, 30, cached=64, reasoning=20),
        ]
    )

    items = await items_of(provider, make_request(user("hi")))

    assert Usage(100, 30, 130, cached_tokens=64, thinking_tokens=20) in items


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("stop", "stop"),
        ("length", "max_tokens"),
        ("content_filter", "blocked"),
        ("tool_calls", "stop"),  # the calls come as FunctionCall items
        ("function_call", "stop"),
    ],
)
async def test_finish_reasons_are_mapped(fake_openai, provider, raw, reason):
    fake_openai.reply(["Some text"], finish_reason=raw)

    items = await items_of(provider, make_request(user("hi")))

    assert items[-1] == Finish(reason, raw=raw)


async def test_a_server_that_sends_no_finish_reason_or_usage_just_ends(fake_openai, provider):
    fake_openai.reply(["Just ", "text"], finish_reason=None)

    assert await items_of(provider, make_request(user("hi"))) == ["Just ", "text"]


async def test_provider_satisfies_protocol_and_names(provider):
    checked: LLMProvider = provider
    assert (checked.name, checked.model) == ("openai", MODEL)


async def test_request_carries_model_system_history_usage_option_and_key(fake_openai, provider):
    request = make_request(
        user("Hi."),
        assistant("Hello!"),
        assistant(""),
        user("Tell me a joke."),
        instructions="Be brief.",
    )

    await texts_of(provider, request)

    [sent] = fake_openai.wait_for_requests(1)
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body["model"] == MODEL
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["messages"] == [
        {
            "role": "system",
            "content": "You are a helpful voice assistant.\n\n"
            "Instructions for this turn:\nBe brief.",
        },
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    assert "temperature" not in sent.body
    assert "max_tokens" not in sent.body


async def test_an_assistant_started_turn_asks_the_model_to_speak(fake_openai, provider):
    await texts_of(provider, make_request(user("Hi"), assistant("Hello!"), system=None))

    [sent] = fake_openai.wait_for_requests(1)
    assert sent.roles == ["user", "assistant", "user"]
    assert sent.last_user_text == SPEAK_NOW


async def test_generation_settings_are_sent_as_openai_fields(fake_openai, provider):
    settings = GenerationSettings(temperature=0.2, max_output_tokens=80, thinking_level="low")

    await texts_of(provider, make_request(user("hi"), settings=settings))

    [sent] = fake_openai.wait_for_requests(1)
    assert (sent.body["temperature"], sent.body["max_tokens"]) == (0.2, 80)
    assert "reasoning_effort" not in sent.body  # Gemini's thinking settings stay Gemini's


async def test_a_local_server_without_a_key_gets_a_placeholder(fake_openai):
    llm = make_provider(fake_openai, api_key=None)
    try:
        assert (
            "".join(await texts_of(llm, make_request(user("hi")))) == "You said: hi. That is all."
        )
    finally:
        await llm.aclose()

    [sent] = fake_openai.wait_for_requests(1)
    assert sent.headers["authorization"] == f"Bearer {NO_KEY}"


# -- HTTP errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (429, "rate_limited", True),
        (500, "unavailable", True),
        (502, "unavailable", True),
        (503, "unavailable", True),
        (409, "unavailable", True),
        (408, "timeout", True),
        (400, "bad_request", False),
        (422, "bad_request", False),
        (401, "auth_failed", False),
        (403, "auth_failed", False),
        (404, "model_not_found", False),
    ],
)
async def test_http_errors_are_translated_without_sdk_retry(
    fake_openai, provider, status, code, retryable
):
    # x-should-retry: true would make the SDK retry if its retries were on.
    fake_openai.fail(
        status,
        message=f"cannot handle {USER_TEXT!r} for key {API_KEY}",
        headers={"x-should-retry": "true"},
    )

    texts, error = await until_error(provider, make_request(user(USER_TEXT)))

    assert texts == []
    assert (error.code, error.retryable, error.status) == (code, retryable, status)
    assert_private(error)
    assert len(fake_openai.requests) == 1


async def test_a_wrong_key_says_to_check_it(fake_openai, provider):
    fake_openai.fail(401, "Incorrect API key provided: sk-test-***", code="invalid_api_key")

    _, error = await until_error(provider, make_request(user("hi")))

    assert error.code == "auth_failed"
    assert "check OPENAI_API_KEY" in error.message
    assert "invalid_api_key" in error.message


async def test_an_unknown_model_names_the_settings_to_check(fake_openai, provider):
    fake_openai.fail(404, f"The model `{MODEL}` does not exist", code="model_not_found")

    _, error = await until_error(provider, make_request(user("hi")))

    assert error.code == "model_not_found"
    assert "OPENAI_MODEL" in error.message
    assert MODEL in error.message


async def test_an_exhausted_quota_is_not_retryable(fake_openai, provider):
    fake_openai.fail(429, "You exceeded your current quota", code="insufficient_quota")

    _, error = await until_error(provider, make_request(user("hi")))

    assert (error.code, error.retryable) == ("rate_limited", False)
    assert "quota" in error.message


async def test_an_error_event_mid_stream_is_retryable_unavailable(fake_openai, provider):
    fake_openai.reply_raw(
        [chunk("Hel"), {"error": {"message": "overloaded", "type": "server_error", "code": None}}]
    )

    texts, error = await until_error(provider, make_request(user("hi")))

    assert texts == ["Hel"]
    assert (error.code, error.retryable) == ("unavailable", True)


async def test_logs_carry_no_key_and_no_text(fake_openai, provider, caplog):
    caplog.set_level(logging.DEBUG)
    fake_openai.fail(500, message=f"echo {USER_TEXT}")

    await until_error(provider, make_request(user(USER_TEXT)))

    records = [r for r in caplog.records if r.name == "gateway.providers.openai"]
    assert records, "the failure should be logged"
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
        assert USER_TEXT not in record.getMessage()


# -- transport failures ----------------------------------------------------------------


async def test_a_connection_cut_mid_stream_is_connection_lost(fake_openai, provider):
    script = fake_openai.cut_after(["Hello ", "there"])

    texts, error = await until_error(provider, make_request(user(USER_TEXT)))

    assert texts == ["Hello ", "there"]
    assert (error.code, error.retryable, error.status) == ("connection_lost", True, None)
    assert_private(error)
    assert script.finished.is_set()
    assert len(fake_openai.requests) == 1


async def test_malformed_sse_is_bad_response(fake_openai, provider):
    fake_openai.malformed(after=["Hi"], raw=f"data: {{{USER_TEXT}\n\n".encode())

    texts, error = await until_error(provider, make_request(user("hi")))

    assert texts == ["Hi"]
    assert (error.code, error.retryable) == ("bad_response", False)
    assert_private(error)


async def test_silence_beyond_the_timeout_is_timeout(fake_openai):
    script = fake_openai.stall(after=["Hi"])
    llm = make_provider(fake_openai, timeout_s=0.3)
    try:
        texts, error = await until_error(llm, make_request(user("hi")))
    finally:
        await llm.aclose()

    assert texts == ["Hi"]
    assert (error.code, error.retryable) == ("timeout", True)
    assert await wait_event(script.client_gone)


async def test_a_refused_connection_is_connection_lost():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = OpenAIProvider(api_key=API_KEY, model=MODEL, base_url=f"http://127.0.0.1:{port}/v1")
    try:
        _, error = await until_error(llm, make_request(user("hi")))
    finally:
        await llm.aclose()

    assert (error.code, error.retryable) == ("connection_lost", True)
    assert "127.0.0.1" in error.message
    assert_private(error)


# -- closing --------------------------------------------------------------------------


async def test_cancelling_the_consumer_closes_the_http_stream(fake_openai, provider):
    script = fake_openai.stall(after=["One", "Two"])
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(make_request(user("hi"))):
            got_first.set()

    task = asyncio.create_task(consume())
    await got_first.wait()
    assert not script.client_gone.is_set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await wait_event(script.client_gone)


async def test_aclose_of_the_stream_between_deltas_closes_the_http_stream(fake_openai, provider):
    script = fake_openai.stall(after=["One", "Two"])
    stream = provider.stream(make_request(user("hi")))

    assert await anext(stream) == "One"
    await stream.aclose()

    assert await wait_event(script.client_gone)


async def test_the_provider_keeps_working_after_a_closed_stream(fake_openai, provider):
    fake_openai.stall(after=["One"])
    stream = provider.stream(make_request(user("hi")))
    assert await anext(stream) == "One"
    await stream.aclose()

    fake_openai.reply(["Still here."])
    assert await texts_of(provider, make_request(user("hi"))) == ["Still here."]


async def test_the_fake_serves_the_non_streaming_call_too(fake_openai):
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=fake_openai.url, max_retries=0)
    try:
        fake_openai.reply(["Plain ", "answer."])
        completion = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        await client.close()
    assert completion.choices[0].message.content == "Plain answer."
