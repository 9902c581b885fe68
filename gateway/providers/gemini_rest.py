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
  ``str``). The whole request is then encoded once, in C, by the SDK's ``json.dumps``.
- Each streamed piece's JSON is read with orjson into a :class:`Piece`.

Checked against google-genai 3.6 (``pyproject.toml`` pins the range);
``tests/providers/test_gemini_rest.py`` sends the same requests through both paths and
fails if the SDK's wire format, response format or error types drift.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from google import genai
from google.genai import _common, models, types

from gateway.core.history import Message

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

    texts: tuple[str, ...]  # non-empty, non-thought text parts of the first candidate
    finish_reason: str | None  # REST name, e.g. "STOP", "MAX_TOKENS", "SAFETY"
    block_reason: str | None  # promptFeedback.blockReason: the prompt itself was blocked
    usage: dict[str, Any] | None  # usageMetadata as sent (camelCase keys)

    @property
    def blocked(self) -> bool:
        """Whether this piece says the prompt or the reply was withheld by a filter."""
        return self.block_reason is not None or self.finish_reason in BLOCKED_FINISH_REASONS


def parse_piece(body: str | bytes) -> Piece:
    """One streamed piece's JSON (REST casing), read with orjson; raises
    :class:`MalformedPiece` when it is not JSON or not shaped like a response."""
    try:
        return _piece(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        raise MalformedPiece("a streamed piece is not JSON") from exc
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        raise MalformedPiece("a streamed piece is not shaped like a response") from exc


def _piece(data: Any) -> Piece:
    texts: tuple[str, ...] = ()
    finish: str | None = None
    candidates = data.get("candidates")
    if candidates:
        first = candidates[0]
        finish = first.get("finishReason")
        content = first.get("content")
        if content:
            texts = tuple(
                _text(part)
                for part in content.get("parts") or ()
                if part.get("text") and not part.get("thought")
            )
    feedback = data.get("promptFeedback")
    block = feedback.get("blockReason") if feedback else None
    return Piece(texts, finish, block, data.get("usageMetadata"))


def _text(part: dict[str, Any]) -> str:
    text = part["text"]
    if not isinstance(text, str):
        raise TypeError("a text part that is not a string")
    return text


def rest_contents(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """The history as REST ``contents``: roles ``user``/``model``, consecutive messages of
    one role merged into one content (Gemini wants alternating roles), blank ones dropped."""
    contents: list[dict[str, Any]] = []
    last_role = ""
    for message in messages:
        text = message.text
        if not text or text.isspace():
            continue
        role = "model" if message.role == "assistant" else "user"
        if role == last_role:
            contents[-1]["parts"].append({"text": text})
        else:
            contents.append({"role": role, "parts": [{"text": text}]})
            last_role = role
    return contents


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
    ) -> AsyncIterator[Piece]:
        """Yield the reply's pieces. Raises the SDK's ``errors.APIError`` on an HTTP error
        or an error object in the stream, its transport's exceptions on a broken
        connection, and :class:`MalformedPiece`."""
        path, body = self.body(contents, key, make_config)
        responses = await self._api.async_request_streamed("post", path, body, None)
        async for response in responses:
            yield parse_piece(response.body or "{}")
