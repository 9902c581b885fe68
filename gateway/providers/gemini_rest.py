"""The Gemini streaming call without the google-genai SDK's per-turn pydantic work.

``client.aio.models.generate_content_stream`` validates the whole request through
pydantic models on every turn (``_GenerateContentParameters`` over every history
message: about 0.4 ms a message, 117 ms for 300 messages, on the event loop) and then
parses every streamed piece into a ``GenerateContentResponse`` (about 0.1 ms a piece).
A voice turn needs neither: its history is plain text and it reads a few fields of
each piece. This module keeps the SDK for everything else, and goes around exactly
those two steps:

- The SDK's client does the call: authentication, base URL and API version, headers,
  timeouts, the HTTP transport, and its error types (``errors.APIError`` and
  subclasses, raised from HTTP statuses and from error objects in the stream), through
  ``BaseApiClient.async_request_streamed``, the private method every SDK streaming
  call goes through.
- What depends on the generation config (model path, system instruction, generation
  config, safety settings) is converted by the SDK's own converter, once per distinct
  system instruction (an LRU of :data:`STATIC_CACHE` entries), not per turn.
- The history becomes REST ``contents`` directly: one small dict per message, no
  validation (the text of a :class:`~gateway.core.history.Message` is already a
  ``str``); function calls and results become ``functionCall`` / ``functionResponse``
  parts. The request is encoded once, by orjson, and handed to the SDK as bytes
  (``BaseApiClient._build_request`` then ``_async_request``, what
  ``async_request_streamed`` calls; the SDK sends bytes as they are).
- The streamed body is read here rather than through the SDK's iterator, which reads
  each SSE event with ``json.loads``, encodes it back with ``json.dumps`` to look for
  an error object, and hands the string on through four nested async generators.
  Lines are split by the SDK's own ``_SseLineDecoder`` (CR, LF or CRLF only) and
  ``data:`` events joined as the SDK joins them; each event is read once, with orjson,
  into a :class:`Piece` (text parts and ``functionCall`` parts, in order); an error
  object raises through the SDK's ``APIError.raise_error_async``, as the SDK does.
  Lines outside ``data:`` (an error sent as bare JSON) go through the SDK's
  ``_RawJsonLineBuffer``.

Checked against google-genai 3.6 (``pyproject.toml`` pins the range);
``tests/providers/test_gemini_rest.py`` sends the same requests through both paths and
fails if the SDK's wire format, response format or error types drift.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Hashable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Final

import httpx2
import orjson
from google import genai
from google.genai import _api_client, _common, errors, models, types

from gateway.core.history import FunctionCall, Message

#: Distinct generation configs whose converted request parts are kept.
STATIC_CACHE: Final = 64

#: Finish reasons (REST names) that mean the reply was withheld by a filter.
BLOCKED_FINISH_REASONS: Final = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"}
)
_PLACEHOLDER: Final = [types.Content(role="user", parts=[types.Part(text=".")])]


class MalformedPiece(ValueError):
    """A streamed piece that is not a ``GenerateContentResponse`` (invalid JSON included)."""


@dataclass(frozen=True, slots=True)
class Piece:
    """What the gateway reads from one streamed ``GenerateContentResponse``."""

    #: Non-empty, non-thought text parts and function calls of the first candidate, in order.
    parts: tuple[str | FunctionCall, ...]
    finish_reason: str | None  # REST name, e.g. "STOP", "MAX_TOKENS", "SAFETY"
    block_reason: str | None  # promptFeedback.blockReason: the prompt itself was blocked
    usage: dict[str, Any] | None  # usageMetadata as sent (camelCase keys)

    @property
    def texts(self) -> tuple[str, ...]:
        """The text parts alone."""
        return tuple(part for part in self.parts if isinstance(part, str))

    @property
    def calls(self) -> tuple[FunctionCall, ...]:
        """The function calls alone."""
        return tuple(part for part in self.parts if isinstance(part, FunctionCall))

    @property
    def blocked(self) -> bool:
        """Whether this piece says the prompt or the reply was withheld by a filter."""
        return self.block_reason is not None or self.finish_reason in BLOCKED_FINISH_REASONS


def parse_piece(body: str | bytes) -> Piece:
    """One streamed piece's JSON (REST casing), read with orjson; raises
    :class:`MalformedPiece` when it is not JSON or not shaped like a response."""
    return _shaped(_json(body))


def _json(body: str | bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedPiece("a streamed piece is not JSON") from exc


def _shaped(data: Any) -> Piece:
    try:
        return _piece(data)
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        raise MalformedPiece("a streamed piece is not shaped like a response") from exc


def _piece(data: Any) -> Piece:
    parts: list[str | FunctionCall] = []
    finish: str | None = None
    candidates = data.get("candidates")
    if candidates:
        first = candidates[0]
        finish = first.get("finishReason")
        content = first.get("content")
        if content:
            for part in content.get("parts") or ():
                call = part.get("functionCall")
                if call and call.get("name"):
                    parts.append(_call(call, part.get("thoughtSignature")))
                elif part.get("text") and not part.get("thought"):
                    parts.append(_text(part))
    feedback = data.get("promptFeedback")
    block = feedback.get("blockReason") if feedback else None
    return Piece(tuple(parts), finish, block, data.get("usageMetadata"))


def _call(call: dict[str, Any], signature: Any) -> FunctionCall:
    """A ``functionCall`` part; its ``thoughtSignature`` (base64 on the wire) is kept as
    sent, to go back with the call in the history as Gemini requires."""
    name = call["name"]
    args = call.get("args") or {}
    if not isinstance(name, str) or not isinstance(args, dict):
        raise TypeError("a functionCall that is not a name and an args object")
    return FunctionCall(
        call_id=str(call.get("id") or ""),
        name=name,
        arguments=json.dumps(args),
        signature=signature if isinstance(signature, str) else None,
    )


def _text(part: dict[str, Any]) -> str:
    text = part["text"]
    if not isinstance(text, str):
        raise TypeError("a text part that is not a string")
    return text


def rest_contents(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """The history as REST ``contents``: roles ``user``/``model``, consecutive messages of
    one role merged into one content (Gemini wants alternating roles), blank ones dropped;
    an assistant message's calls are ``functionCall`` parts (with their signature), a
    ``tool`` message a ``functionResponse`` part of a user content."""
    contents: list[dict[str, Any]] = []
    last_role = ""
    for message in messages:
        if message.calls or message.role == "tool":
            parts = _rest_parts(message)
            if not parts:
                continue
        else:  # most of a history: one text part, built here (a call less per message)
            text = message.text
            if not text or text.isspace():
                continue
            parts = [{"text": text}]
        role = "model" if message.role == "assistant" else "user"
        if role == last_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
            last_role = role
    return contents


def _rest_parts(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        try:
            output = json.loads(message.text)
        except json.JSONDecodeError:
            output = message.text
        response: dict[str, Any] = {
            "name": message.name or "function",
            "response": output if isinstance(output, dict) else {"output": output},
        }
        call_id = _gemini_id(message.call_id)
        if call_id is not None:
            response["id"] = call_id
        return [{"functionResponse": response}]
    text = message.text
    parts: list[dict[str, Any]] = [] if not text or text.isspace() else [{"text": text}]
    for call in message.calls:
        try:
            args = json.loads(call.arguments)
        except json.JSONDecodeError:
            args = {}
        function: dict[str, Any] = {
            "name": call.name,
            "args": args if isinstance(args, dict) else {},
        }
        call_id = _gemini_id(call.call_id)
        if call_id is not None:
            function["id"] = call_id
        part: dict[str, Any] = {"functionCall": function}
        if call.signature is not None:
            part["thoughtSignature"] = call.signature
        parts.append(part)
    return parts


def _gemini_id(call_id: str | None) -> str | None:
    """Gemini's own call id; ids the gateway or a client made (``call_...``) are not sent."""
    return None if not call_id or call_id.startswith("call_") else call_id


class RestStream:
    """Streams ``streamGenerateContent`` through a ``genai.Client``'s own API client.

    A request's generation config (system instruction included) is given as a
    hashable ``key`` and a function that builds it: it is built and converted by the
    SDK only the first time its key is seen (then kept, :data:`STATIC_CACHE` of them).
    """

    def __init__(self, client: genai.Client, model: str) -> None:
        self._api = client.aio._api_client
        self._model = model
        self._static: OrderedDict[Hashable, tuple[str, dict[str, Any]]] = OrderedDict()

    def _static_parts(
        self, key: Hashable, make_config: Callable[[], types.GenerateContentConfig]
    ) -> tuple[str, dict[str, Any]]:
        """(path, request fields but ``contents``) as the SDK converts them."""
        cached = self._static.get(key)
        if cached is not None:
            self._static.move_to_end(key)
            return cached
        config = make_config()
        params = types._GenerateContentParameters(
            model=self._model, contents=_PLACEHOLDER, config=config
        )
        request = models._GenerateContentParameters_to_mldev(self._api, params, None, params)
        url = request.pop("_url", None) or {}
        request.pop("_query", None)
        request.pop("config", None)
        request.pop("contents", None)
        path = "{model}:streamGenerateContent?alt=sse".format_map(url) if url else ""
        if not path:
            path = f"models/{self._model}:streamGenerateContent?alt=sse"
        fields = _common.encode_unserializable_types(_common.convert_to_dict(request))
        cached = self._static[key] = (path, fields)
        if len(self._static) > STATIC_CACHE:
            self._static.popitem(last=False)
        return cached

    def body(
        self,
        contents: list[dict[str, Any]],
        key: Hashable,
        make_config: Callable[[], types.GenerateContentConfig],
    ) -> tuple[str, dict[str, Any]]:
        """The request path and body for ``contents`` (REST JSON, see :func:`rest_contents`)."""
        path, fields = self._static_parts(key, make_config)
        return path, {"contents": contents, **fields}

    async def stream(
        self,
        contents: list[dict[str, Any]],
        key: Hashable,
        make_config: Callable[[], types.GenerateContentConfig],
    ) -> AsyncGenerator[Piece, None]:
        """Yield the reply's pieces. Raises the SDK's ``errors.APIError`` on an HTTP error
        or an error object in the stream, its transport's exceptions on a broken
        connection, and :class:`MalformedPiece`."""
        path, body = self.body(contents, key, make_config)
        request = self._api._build_request("post", path, {}, None)
        request.data = orjson.dumps(body)
        response = await self._api._async_request(http_request=request, stream=True)
        raw = response.response_stream
        if not isinstance(raw, httpx2.Response):  # the provider hands the SDK httpx2 clients
            raise TypeError(f"the SDK streamed through {type(raw).__name__}, not httpx2")
        events = SseEvents()
        try:
            async with aclosing(raw.aiter_bytes()) as chunks:
                async for chunk in chunks:
                    for event in events.feed(chunk):
                        yield await _read_event(event, response)
            for event in events.close():
                yield await _read_event(event, response)
        finally:
            await raw.aclose()  # the connection goes back to its pool, or is closed


async def _read_event(event: str, response: _api_client.HttpResponse) -> Piece:
    """One event's piece; an error object raises the SDK's error for it."""
    data = _json(event)
    if isinstance(data, dict) and "error" in data:
        error = data["error"]
        code = error.get("code") if isinstance(error, dict) else None
        # An error object without a numeric code is an APIError of code 0.
        await errors.APIError.raise_error_async(
            code if isinstance(code, int) else 0, data, response
        )
    return _shaped(data)


class SseEvents:
    """The events of a ``streamGenerateContent?alt=sse`` body, split as the SDK splits
    them: ``data:`` lines joined until a blank line, other lines buffered as raw JSON
    until their braces balance."""

    __slots__ = ("_data", "_lines", "_raw")

    def __init__(self) -> None:
        self._lines = _api_client._SseLineDecoder()
        self._raw = _api_client._RawJsonLineBuffer()
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The events that ``chunk`` completes."""
        return self._events(self._lines.decode(chunk))

    def close(self) -> list[str]:
        """The events left when the body ends."""
        out = self._events(self._lines.flush())
        remaining = self._raw.flush()
        if remaining:
            out.append(remaining)
        if self._data:
            out.append("\n".join(self._data))
            self._data = []
        return out

    def _events(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        for line in lines:
            if not line:
                if self._data:
                    out.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data: "):
                self._data.append(line[6:])
            else:
                chunk = self._raw.add_line(line)
                if chunk is not None:
                    out.append(chunk)
        return out
