"""Gemini provider: streams a turn through the google-genai SDK.

One ``genai.Client`` is made at construction and reused for every turn. The SDK
is configured so that it never retries on its own (``HttpRetryOptions(attempts=1)``,
automatic continuation and automatic function calling off): retrying belongs to
the caller, which may only retry before the first delta was sent.

The HTTP library is pinned: the client is handed its own ``httpx2`` clients (the
SDK's default library, pydantic's maintained fork of httpx), so the SDK never
switches to aiohttp (which it prefers whenever it is installed, with other timeout
and error semantics) nor to httpx, whatever else is installed or
``GOOGLE_GENAI_HTTP_CLIENT`` says. Not httpx: its connection pool (httpcore 1.0)
scans every pooled connection for every pooled connection on each request and each
release, which at 100 concurrent turns cost more CPU than the rest of the gateway
(23 CPU-ms a turn instead of 10) and queued every turn behind it; httpcore2's pool
does one linear pass.

Each turn sends the request's generation settings; when a request says nothing
about thinking, :func:`voice_thinking` picks the lowest-latency setting the model
allows (every second of thinking is a second of dead air before the first word).

Function calls: the request's tools are sent as ``functionDeclarations`` (their
JSON Schemas as ``parametersJsonSchema``); a ``functionCall`` part in the stream
is yielded as a :class:`~gateway.core.history.FunctionCall` (with its
``thoughtSignature``, which is sent back with the call in the history, as Gemini
requires); a ``tool`` message of the history is a ``functionResponse`` part.

The stream yields text, then the call's :class:`~gateway.core.history.Usage` (from
``usage_metadata``) and a :class:`~gateway.core.history.Finish` mapped from
Gemini's finish or block reason.

The call itself goes through :mod:`gateway.providers.gemini_rest`: the SDK's client,
transport and errors, without its per-turn pydantic validation of the whole history
and its per-piece response models (the history becomes REST JSON directly, each
piece is read with orjson; the config is converted by the SDK once per distinct
setting).

SDK errors are translated into :class:`~gateway.providers.base.ProviderError`.
Messages carry the model, the HTTP status and Google's status name only: never the
API key, the prompt or the model's text (neither do the logs).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Hashable, Mapping
from typing import TYPE_CHECKING, Any, Final

import httpx2
import orjson
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from gateway.core.history import (
    Finish,
    FinishReason,
    GenerationRequest,
    GenerationSettings,
    StreamItem,
    Usage,
)
from gateway.providers.base import (
    SPEAK_NOW,
    SPEAK_NOW_WITH_INSTRUCTIONS,
    ProviderError,
    build_system_instruction,
)
from gateway.providers.gemini_rest import MalformedPiece, Piece, RestStream, rest_contents
from gateway.providers.http import sharded_transport

if TYPE_CHECKING:
    from gateway.settings import Settings

logger = logging.getLogger("gateway.providers.gemini")

_F = types.FinishReason
#: Gemini finish reasons, as the gateway names them; any other is ``other``.
_FINISH_REASONS: Final[Mapping[types.FinishReason, FinishReason]] = {
    _F.STOP: "stop",
    _F.MAX_TOKENS: "max_tokens",
    # Withheld by a filter, or (LANGUAGE) refused in an unsupported language: the
    # user must be told, not left with a fragment or silence.
    **{
        reason: "blocked"
        for reason in (
            _F.SAFETY,
            _F.RECITATION,
            _F.LANGUAGE,
            _F.BLOCKLIST,
            _F.PROHIBITED_CONTENT,
            _F.SPII,
            _F.IMAGE_SAFETY,
            _F.IMAGE_PROHIBITED_CONTENT,
            _F.IMAGE_RECITATION,
            _F.MODEL_ARMOR,
        )
    },
}

#: The same, by the names on the wire.
_FINISH_BY_NAME: Final[Mapping[str, FinishReason]] = {
    reason.value: name for reason, name in _FINISH_REASONS.items()
}

#: ``google.rpc.ErrorInfo`` reasons that mean the API key itself is wrong.
_BAD_KEY_REASONS: Final = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
    }
)

_TIMEOUT_ERRORS: Final = (httpx2.TimeoutException,)
# Connect errors, reset/closed connections, a body cut mid-way (RemoteProtocolError).
_CONNECTION_ERRORS: Final = (httpx2.TransportError,)
_MALFORMED_ERRORS: Final = (
    genai_errors.UnknownApiResponseError,  # an SSE event that is not JSON
    MalformedPiece,  # JSON that is not a GenerateContentResponse
    json.JSONDecodeError,
    pydantic.ValidationError,
    httpx2.DecodingError,
)


def voice_thinking(model: str) -> types.ThinkingConfig | None:
    """The lowest-latency thinking setting ``model`` accepts.

    Gemini 3 models think dynamically at level ``high`` unless told otherwise;
    Google's guidance is ``minimal`` (Flash models only: close to no thinking, for
    chat and high-throughput use) or ``low`` (the lowest level Pro accepts) to
    minimise latency. Gemini 2.x models take a token budget instead: 0 turns
    thinking off on Flash and Flash-Lite; 2.x Pro cannot turn it off, so it keeps
    its default. Models that are not Gemini (Gemma...) get no thinking setting.
    """
    name = model.lower().removeprefix("models/")
    flash = "flash" in name
    if not name.startswith("gemini-"):
        return None  # Gemma and other models served by the API: no thinking settings
    if name.startswith(("gemini-1", "gemini-2")):
        return types.ThinkingConfig(thinking_budget=0) if flash and "2.5" in name else None
    level = types.ThinkingLevel.MINIMAL if flash else types.ThinkingLevel.LOW
    return types.ThinkingConfig(thinking_level=level)


def build_config(
    request: GenerationRequest, model: str, *, system_instruction: str | None
) -> types.GenerateContentConfig:
    """The request's generation settings as a Gemini config (no SDK-side automation)."""
    settings: GenerationSettings = request.settings
    thinking: types.ThinkingConfig | None
    if settings.thinking_level is not None:
        thinking = types.ThinkingConfig(
            thinking_level=types.ThinkingLevel(settings.thinking_level.upper())
        )
    elif settings.thinking_budget is not None:
        thinking = types.ThinkingConfig(thinking_budget=settings.thinking_budget)
    else:
        thinking = voice_thinking(model)
    return types.GenerateContentConfig(
        system_instruction=system_instruction,
        temperature=settings.temperature,
        max_output_tokens=settings.max_output_tokens,
        thinking_config=thinking,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        automatic_continuation=False,
        tools=build_tools(request),
        tool_config=build_tool_config(request),
    )


def build_tool_config(request: GenerationRequest) -> types.ToolConfig | None:
    """``tool_choice`` as Gemini's function-calling mode (``None``: the default, AUTO)."""
    choice = request.tool_choice
    if not request.tools or choice in (None, "auto"):
        return None
    if choice == "none":
        mode, names = types.FunctionCallingConfigMode.NONE, None
    elif choice == "required":
        mode, names = types.FunctionCallingConfigMode.ANY, None
    else:
        mode, names = types.FunctionCallingConfigMode.ANY, [choice]
    return types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(mode=mode, allowed_function_names=names)
    )


def build_tools(request: GenerationRequest) -> list[types.Tool] | None:
    """The request's functions as one Gemini tool of function declarations."""
    if not request.tools:
        return None
    return [
        types.Tool(
            function_declarations=[
                types.FunctionDeclaration(
                    name=tool.name,
                    description=tool.description or None,
                    parameters_json_schema=tool.parameters or {"type": "object"},
                )
                for tool in request.tools
            ]
        )
    ]


def from_settings(settings: Settings) -> GeminiProvider:
    """The provider ``GATEWAY_PROVIDER=gemini`` (or a Gemini key) chooses."""
    key = settings.gemini_api_key
    if key is None or not key.get_secret_value():
        raise ValueError("the Gemini provider needs GEMINI_API_KEY (or GOOGLE_API_KEY)")
    return GeminiProvider(
        api_key=key.get_secret_value(),
        model=settings.gemini_model,
        base_url=settings.gemini_base_url,
        timeout_s=settings.gemini_timeout_s,
    )


class GeminiProvider:
    """:class:`~gateway.providers.base.LLMProvider` backed by the Gemini API."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        """Create the client.

        ``base_url`` replaces ``https://generativelanguage.googleapis.com`` (tests point
        it at a fake); ``timeout_s`` bounds connecting and each wait for bytes,
        so it is the longest silence tolerated within a stream, not a turn deadline.
        """
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._model = model
        # Our own httpx2 clients pin the SDK's HTTP library (see the module docstring).
        self._http = httpx2.AsyncClient(transport=sharded_transport())
        self._http_sync = httpx2.Client()
        self._client = genai.Client(
            vertexai=False,  # ignore GOOGLE_GENAI_USE_VERTEXAI from the environment
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url,
                timeout=max(1, round(timeout_s * 1000)),  # milliseconds
                retry_options=types.HttpRetryOptions(attempts=1),
                httpx_async_client=self._http,
                httpx_client=self._http_sync,
            ),
        )
        self._rest = RestStream(self._client, model)

    @property
    def name(self) -> str:
        """Always ``gemini``."""
        return "gemini"

    @property
    def model(self) -> str:
        """The Gemini model id, e.g. ``gemini-2.5-flash``."""
        return self._model

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        """Yield the reply's text deltas, then its usage and finish; see the module
        docstring for errors.

        A blocked prompt or reply (``promptFeedback.blockReason`` or a blocking
        finish reason) ends the stream with ``Finish("blocked")``, whether or not
        text came first. Thought parts are skipped.
        """
        contents = build_contents(request)
        system = build_system_instruction(request)

        def config() -> types.GenerateContentConfig:
            return build_config(request, self._model, system_instruction=system)

        # The stream is read here, not on a task of its own: ``RestStream.stream`` reads
        # the HTTP body itself (no SDK generators in between) and closes the response
        # in its ``finally``, which ``aclose()`` below runs however this generator ends.
        pieces = self._rest.stream(contents, _config_key(request, system), config)
        usage: Mapping[str, Any] | None = None
        finish: Finish | None = None
        try:
            while True:
                try:
                    piece = await anext(pieces)
                except StopAsyncIteration:
                    break
                except Exception as exc:  # every SDK or transport failure, translated
                    raise self._translate(exc) from exc
                for part in piece.parts:
                    yield part
                usage = piece.usage or usage
                finish = _finish(piece) or finish
                if finish is not None and finish.reason == "blocked":
                    logger.warning(
                        "Gemini blocked the reply (model %s): %s", self._model, finish.raw
                    )
                    break
        finally:
            # Normal end, error, cancellation of the consumer, or aclose().
            await pieces.aclose()
        if usage is not None:
            yield _usage(usage)
        if finish is not None:
            yield finish

    async def aclose(self) -> None:
        """Close the SDK's clients and the HTTP clients handed to it."""
        try:
            await self._client.aio.aclose()
            self._client.close()
        finally:
            await self._http.aclose()
            self._http_sync.close()

    def _translate(self, exc: Exception) -> ProviderError:
        """Map an SDK or transport exception to a :class:`ProviderError`."""
        error = _translate(exc, self._model)
        logger.warning(
            "Gemini call failed: code=%s status=%s retryable=%s cause=%s",
            error.code,
            error.status,
            error.retryable,
            type(exc).__name__,
        )
        return error


def _translate(exc: Exception, model: str) -> ProviderError:
    """HTTP 429 rate_limited, 5xx unavailable, 408 and transport timeouts timeout
    (all retryable); a bad API key (400 ``API_KEY_INVALID``), 401 and 403
    auth_failed, 404 model_not_found, other 4xx bad_request, unparsable or
    ill-shaped responses bad_response (not retryable); connect errors and streams
    cut mid-way connection_lost (retryable); anything else provider_error.
    """
    if isinstance(exc, genai_errors.APIError):
        status = exc.code if isinstance(exc.code, int) else None
        label = f"Gemini ({model}) returned HTTP {status} {exc.status or ''}".rstrip()
        if _error_reasons(exc.details) & _BAD_KEY_REASONS or status == 401:
            return ProviderError(
                f"{label}: the API key was refused; check GEMINI_API_KEY",
                code="auth_failed",
                status=status,
            )
        if status == 403:
            return ProviderError(
                f"{label}: the API key may not use this model or API; check GEMINI_API_KEY "
                "and the key's project",
                code="auth_failed",
                status=status,
            )
        if status == 404:
            return ProviderError(
                f"{label}: there is no model {model!r}; check GEMINI_MODEL",
                code="model_not_found",
                status=status,
            )
        if status == 429:
            return ProviderError(label, code="rate_limited", retryable=True, status=status)
        if status == 408:
            return ProviderError(label, code="timeout", retryable=True, status=status)
        if status is not None and 500 <= status < 600:
            return ProviderError(label, code="unavailable", retryable=True, status=status)
        if status is not None and 400 <= status < 500:
            return ProviderError(label, code="bad_request", status=status)
        return ProviderError(label, code="provider_error", status=status)
    if isinstance(exc, _TIMEOUT_ERRORS):
        return ProviderError(f"Gemini ({model}) timed out", code="timeout", retryable=True)
    if isinstance(exc, _CONNECTION_ERRORS):
        return ProviderError(
            f"Gemini ({model}) connection failed or was cut",
            code="connection_lost",
            retryable=True,
        )
    if isinstance(exc, _MALFORMED_ERRORS):
        return ProviderError(f"Gemini ({model}) sent a malformed response", code="bad_response")
    return ProviderError(
        f"Gemini ({model}) call failed: {type(exc).__name__}", code="provider_error"
    )


def _error_reasons(details: Any) -> frozenset[str]:
    """The ``google.rpc.ErrorInfo`` reasons in an error body."""
    error = details.get("error", details) if isinstance(details, dict) else None
    entries = error.get("details") if isinstance(error, dict) else None
    if not isinstance(entries, list):
        return frozenset()
    return frozenset(
        entry["reason"]
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("reason"), str)
    )


def build_contents(request: GenerationRequest) -> list[dict[str, Any]]:
    """Map the history to Gemini's REST ``contents`` (see
    :func:`~gateway.providers.gemini_rest.rest_contents`: roles ``user``/``model``,
    consecutive messages of one role merged, empty ones dropped). When nothing is
    left, or the last content is the model's (the assistant starts a turn by itself),
    a user content asks the model to speak now.
    """
    contents = rest_contents(request.messages)
    if not contents or contents[-1]["role"] == "model":
        nudge = SPEAK_NOW_WITH_INSTRUCTIONS if request.instructions else SPEAK_NOW
        contents.append({"role": "user", "parts": [{"text": nudge}]})
    return contents


def _finish(piece: Piece) -> Finish | None:
    """How this piece says the reply ended, if it does."""
    if piece.block_reason is not None:
        return Finish("blocked", raw=f"prompt {piece.block_reason}")
    if piece.finish_reason is None:
        return None
    return Finish(_FINISH_BY_NAME.get(piece.finish_reason, "other"), raw=piece.finish_reason)


def _config_key(request: GenerationRequest, system: str | None) -> Hashable:
    """What the converted config depends on, as a hashable key (tool schemas are dicts:
    they are keyed by their JSON)."""
    tools = orjson.dumps(
        [(t.name, t.description, t.parameters) for t in request.tools],
        option=orjson.OPT_SORT_KEYS,
    )
    return (system, request.settings, tools, request.tool_choice)


def _count(meta: Mapping[str, Any], name: str) -> int | None:
    value = meta.get(name)
    return value if isinstance(value, int) else None


def _usage(meta: Mapping[str, Any]) -> Usage:
    """Gemini's token counts (``usageMetadata``): input includes tool-use prompt
    tokens, output the candidates; the total is Gemini's own (it also counts thinking)."""
    input_tokens = (_count(meta, "promptTokenCount") or 0) + (
        _count(meta, "toolUsePromptTokenCount") or 0
    )
    output_tokens = _count(meta, "candidatesTokenCount") or 0
    thinking = _count(meta, "thoughtsTokenCount")
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=_count(meta, "totalTokenCount")
        or input_tokens + output_tokens + (thinking or 0),
        cached_tokens=_count(meta, "cachedContentTokenCount"),
        thinking_tokens=thinking,
    )
