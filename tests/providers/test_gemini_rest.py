"""Contract of gateway.providers.gemini_rest with the google-genai SDK it goes around.

Every test sends the same thing through the SDK's public streaming call and through
the module, against the fake Gemini, and compares: the request on the wire, the
fields read from each streamed piece, and the exceptions. A new SDK version that
changes its wire format, its response format or its error types fails here.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import _api_client, types
from google.genai import errors as genai_errors

from gateway.core.history import FunctionCall, Message
from gateway.providers.gemini_rest import (
    MalformedPiece,
    Piece,
    RestStream,
    SseEvents,
    parse_piece,
    rest_contents,
)
from tests.support.fake_gemini import (
    FakeGemini,
    RecordedRequest,
    call_part,
    finish_event,
    function_call_event,
    prompt_blocked_event,
    text_event,
)

API_KEY = "AIza-test-secret-key-0123456789"
MODEL = "gemini-test-flash"

CONFIGS = [
    types.GenerateContentConfig(
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name="weather",
                        description="The weather in a city",
                        parameters_json_schema={
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                        },
                    )
                ]
            )
        ],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["weather"]
            )
        ),
    ),
    types.GenerateContentConfig(
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    ),
    types.GenerateContentConfig(
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        temperature=0.4,
        max_output_tokens=256,
        thinking_config=types.ThinkingConfig(thinking_budget=0),
        safety_settings=[
            types.SafetySetting(
                category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                threshold=types.HarmBlockThreshold.BLOCK_ONLY_HIGH,
            )
        ],
    ),
]

HISTORIES = [
    (Message("user", "Hello"),),
    (
        Message("user", "Hi, I am Ada."),
        Message("assistant", "Nice to meet you, Ada."),
        Message("user", "  "),
        Message("user", "What is my name? ¿Y en español? 你好 👍"),
    ),
    (
        Message("assistant", "Welcome!"),
        Message("assistant", "How can I help?"),
        Message("user", 'Quote "this" and a \\ backslash\nand a new line.'),
    ),
    (  # function calls (Gemini's id and signature kept, the gateway's own id not sent)
        Message("user", "Weather in Paris and Rome?"),
        Message(
            "assistant",
            "Let me look.",
            calls=(
                FunctionCall("g-1", "weather", '{"city": "Paris"}', signature="c2lnLTE="),
                FunctionCall("call_abc", "weather", '{"city": "Rome"}'),
            ),
        ),
        Message("tool", '{"temp_c": 21}', call_id="g-1", name="weather"),
        Message("tool", '"sunny"', call_id="call_abc", name="weather"),
        Message("assistant", "", calls=(FunctionCall("g-2", "end_call", "{}"),)),
        Message("tool", '{"ok": true}', call_id="g-2", name="end_call"),
    ),
]


@pytest.fixture(autouse=True)
def _sdk_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GOOGLE_GENAI_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def client(fake_gemini: FakeGemini) -> AsyncIterator[genai.Client]:
    sdk = genai.Client(
        vertexai=False,
        api_key=API_KEY,
        http_options=types.HttpOptions(
            base_url=fake_gemini.url, retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )
    yield sdk
    await sdk.aio.aclose()
    sdk.close()


def sdk_parts(message: Message) -> list[types.Part]:
    """One message as SDK parts: text, function calls, or one function response."""

    def gemini_id(call_id: str | None) -> str | None:
        return None if not call_id or call_id.startswith("call_") else call_id

    if message.role == "tool":
        output = json.loads(message.text)
        return [
            types.Part(
                function_response=types.FunctionResponse(
                    id=gemini_id(message.call_id),
                    name=message.name,
                    response=output if isinstance(output, dict) else {"output": output},
                )
            )
        ]
    parts = [types.Part(text=message.text)] if message.text.strip() else []
    for call in message.calls:
        parts.append(
            types.Part(
                function_call=types.FunctionCall(
                    id=gemini_id(call.call_id), name=call.name, args=json.loads(call.arguments)
                ),
                thought_signature=base64.b64decode(call.signature) if call.signature else None,
            )
        )
    return parts


def sdk_contents(history: tuple[Message, ...]) -> list[types.Content]:
    """The same history as SDK types (what the provider built before this module)."""
    contents: list[types.Content] = []
    for message in history:
        role = "model" if message.role == "assistant" else "user"
        for part in sdk_parts(message):
            if contents and contents[-1].role == role and contents[-1].parts is not None:
                contents[-1].parts.append(part)
            else:
                contents.append(types.Content(role=role, parts=[part]))
    return contents


async def via_sdk(
    client: genai.Client, history: tuple[Message, ...], config: types.GenerateContentConfig
) -> list[types.GenerateContentResponse]:
    stream = await client.aio.models.generate_content_stream(
        model=MODEL, contents=sdk_contents(history), config=config
    )
    return [response async for response in stream]


async def via_rest(
    client: genai.Client, history: tuple[Message, ...], config: types.GenerateContentConfig
) -> list[Piece]:
    rest = RestStream(client, MODEL)
    pieces = rest.stream(rest_contents(history), config.model_dump_json(), lambda: config)
    return [piece async for piece in pieces]


def wire(request: RecordedRequest) -> dict[str, Any]:
    """What must match on the wire (headers that carry versions are compared by name)."""
    return {
        "path": request.path,
        "query": request.query,
        "body": request.body,
        "api_key": request.headers.get("x-goog-api-key"),
        "content_type": request.headers.get("content-type"),
        "header_names": sorted(k for k in request.headers if k not in ("content-length",)),
    }


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize("system", [None, "You are a voice assistant.\n\nBe brief."])
async def test_the_request_on_the_wire_is_the_sdks(
    client: genai.Client,
    fake_gemini: FakeGemini,
    config: types.GenerateContentConfig,
    history: tuple[Message, ...],
    system: str | None,
) -> None:
    config = config.model_copy(update={"system_instruction": system})
    await via_sdk(client, history, config)
    await via_rest(client, history, config)
    sdk, rest = fake_gemini.wait_for_requests(2)
    assert wire(rest) == wire(sdk)


EVENTS: list[dict[str, Any]] = [
    text_event("Hello"),
    text_event("thinking...", thought=True),
    text_event("", finish_reason="STOP"),
    text_event("Cut short", finish_reason="MAX_TOKENS"),
    text_event("Nope", finish_reason="SAFETY"),
    finish_event("RECITATION"),
    prompt_blocked_event("PROHIBITED_CONTENT"),
    {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "a"}, {"text": "b"}]},
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 12,
            "candidatesTokenCount": 3,
            "totalTokenCount": 15,
            "thoughtsTokenCount": 2,
        },
        "modelVersion": "fake-gemini",
    },
    {"modelVersion": "fake-gemini"},
    function_call_event(
        "weather",
        {"city": "Paris", "days": [1, 2]},
        call_id="g-7",
        text="Looking it up.",
        signature="c2lnLTc=",
        more=[call_part("end_call")],
    ),
]


def read_sdk(response: types.GenerateContentResponse) -> Piece:
    """The fields the gateway reads, taken from the SDK's parsed response."""
    parts: list[str | FunctionCall] = []
    finish = None
    if response.candidates:
        first = response.candidates[0]
        finish = first.finish_reason.value if first.finish_reason else None
        for p in (first.content.parts if first.content else None) or ():
            if p.function_call is not None and p.function_call.name:
                signature = p.thought_signature
                parts.append(
                    FunctionCall(
                        p.function_call.id or "",
                        p.function_call.name,
                        json.dumps(p.function_call.args or {}),
                        None if signature is None else base64.b64encode(signature).decode(),
                    )
                )
            elif p.text and not p.thought:
                parts.append(p.text)
    feedback = response.prompt_feedback
    block = feedback.block_reason.value if feedback and feedback.block_reason else None
    usage = response.usage_metadata
    return Piece(
        tuple(parts),
        finish,
        block,
        usage.model_dump(by_alias=True, exclude_none=True) if usage else None,
    )


async def test_pieces_read_as_the_sdk_reads_them(
    client: genai.Client, fake_gemini: FakeGemini
) -> None:
    history = (Message("user", "Hi"),)
    fake_gemini.reply_events(EVENTS)
    fake_gemini.reply_events(EVENTS)
    sdk = [read_sdk(r) for r in await via_sdk(client, history, CONFIGS[0])]
    rest = await via_rest(client, history, CONFIGS[0])
    assert len(rest) == len(EVENTS)
    for mine, theirs in zip(rest, sdk, strict=True):
        assert mine.parts == theirs.parts
        assert mine.finish_reason == theirs.finish_reason
        assert mine.block_reason == theirs.block_reason
        assert (mine.usage is None) == (theirs.usage is None)
        if mine.usage is not None and theirs.usage is not None:
            assert {k: mine.usage[k] for k in theirs.usage} == theirs.usage
    assert [p.blocked for p in rest] == [False] * 4 + [True] * 3 + [False] * 3
    assert [c.name for c in rest[-1].calls] == ["weather", "end_call"]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 503])
async def test_http_errors_are_the_sdks(
    client: genai.Client, fake_gemini: FakeGemini, status: int
) -> None:
    history = (Message("user", "Hi"),)
    errors: list[genai_errors.APIError] = []
    for call in (via_sdk, via_rest):
        fake_gemini.fail(status, "scripted failure")
        with pytest.raises(genai_errors.APIError) as caught:
            await call(client, history, CONFIGS[0])
        errors.append(caught.value)
    sdk, rest = errors
    assert type(rest) is type(sdk)
    assert (rest.code, rest.status, rest.message) == (sdk.code, sdk.status, sdk.message)


async def test_an_error_object_in_the_stream_is_the_sdks(
    client: genai.Client, fake_gemini: FakeGemini
) -> None:
    history = (Message("user", "Hi"),)
    error = {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    raised: list[type[BaseException]] = []
    for call in (via_sdk, via_rest):
        fake_gemini.reply_events([text_event("Hel"), error])
        with pytest.raises(genai_errors.APIError) as caught:
            await call(client, history, CONFIGS[0])
        raised.append(type(caught.value))
        assert caught.value.code == 503
    assert raised[0] is raised[1]


def test_malformed_pieces_raise_malformed_piece() -> None:
    with pytest.raises(MalformedPiece):
        parse_piece("{not json")
    with pytest.raises(MalformedPiece):
        parse_piece("[1, 2]")
    with pytest.raises(MalformedPiece):
        parse_piece('{"candidates": [7]}')
    with pytest.raises(MalformedPiece):
        parse_piece('{"candidates": [{"content": {"parts": [{"text": 5}]}}]}')


def test_building_a_long_history_is_cheap() -> None:
    """Not a timing assertion (bench/ has those): a generous bound that only fails if the
    per-turn conversion became per-message pydantic work again (~0.4 ms a message)."""
    history = tuple(
        Message("user" if i % 2 == 0 else "assistant", f"Message {i} of a long talk.")
        for i in range(600)
    )
    start = time.perf_counter()
    for _ in range(10):
        rest_contents(history)
    assert (time.perf_counter() - start) / 10 < 0.05


SSE_BODY = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": "lo \xe2\x80\xa8 there"}]}}]}\n\n'
    b'data: {"a":\ndata: 1}\n\n'
    b'{"error": {\n  "code": 503,\n  "message": "a {brace} inside",\n'
    b'  "status": "UNAVAILABLE"\n}}\n'
    b'data: {"last": true}'
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(SSE_BODY)])
def test_events_split_as_the_sdk_splits_them(size: int) -> None:
    """The body's events come out as the SDK's own iterator yields them, however the
    bytes are cut (CRLF, a U+2028 inside a string, a multi-line data event, an error
    as bare JSON lines, a last event with no blank line after it)."""
    theirs = list(
        _api_client.HttpResponse({}, httpx2.Response(200, content=SSE_BODY))._iter_response_stream()
    )
    events = SseEvents()
    mine = [e for i in range(0, len(SSE_BODY), size) for e in events.feed(SSE_BODY[i : i + size])]
    mine += events.close()
    assert mine == theirs
    assert len(mine) == 5
