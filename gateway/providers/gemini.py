"""Gemini provider: streams a turn through the google-genai SDK.

One ``genai.Client`` is made at construction and reused for every turn. The SDK
is configured so that it never retries on its own (``HttpRetryOptions(attempts=1)``,
automatic continuation and automatic function calling off): retrying belongs to
the caller, which may only retry before the first delta was sent.

The HTTP library is pinned: the client is handed its own ``httpx`` clients, so the
SDK never switches to aiohttp (which it prefers whenever it is installed, with
other timeout and error semantics) nor to httpx2, whatever else is installed.

Each turn sends the request's generation settings; when a request says nothing
about thinking, :func:`voice_thinking` picks the lowest-latency setting the model
allows (every second of thinking is a second of dead air before the first word).

The stream yields text, then the call's :class:`~gateway.core.history.Usage` (from
``usage_metadata``) and a :class:`~gateway.core.history.Finish` mapped from
Gemini's finish or block reason.

SDK errors are translated into :class:`~gateway.providers.base.ProviderError`.
Messages carry the model, the HTTP status and Google's status name only: never the
API key, the prompt or the model's text (neither do the logs).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import httpx
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from gateway.core.history import (
    Finish,
    FinishReason,
    GenerationRequest,
    GenerationSettings,
    Message,
    StreamItem,
    Usage,
)
from gateway.providers.base import (
    SPEAK_NOW,
    SPEAK_NOW_WITH_INSTRUCTIONS,
    ProviderError,
    build_system_instruction,
)

if TYPE_CHECKING:
    from gateway.settings import Settings

logger = logging.getLogger("gateway.providers.gemini")

#: What the pump hands to the consumer: a response, the error that ended the
#: stream, or None at the end.
_PumpItem = types.GenerateContentResponse | Exception | None


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

#: ``google.rpc.ErrorInfo`` reasons that mean the API key itself is wrong.
_BAD_KEY_REASONS: Final = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
    }
)

_TIMEOUT_ERRORS: Final = (httpx.TimeoutException,)
# Connect errors, reset/closed connections, a body cut mid-way (RemoteProtocolError).
_CONNECTION_ERRORS: Final = (httpx.TransportError,)
_MALFORMED_ERRORS: Final = (
    genai_errors.UnknownApiResponseError,  # an SSE event that is not JSON
    json.JSONDecodeError,
    pydantic.ValidationError,  # JSON that is not a GenerateContentResponse
    httpx.DecodingError,
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
    )


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
        # Our own httpx clients pin the SDK's HTTP library (see the module docstring).
        self._http = httpx.AsyncClient()
        self._http_sync = httpx.Client()
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
        config = build_config(
            request, self._model, system_instruction=build_system_instruction(request)
        )
        # The SDK is driven by a pump task rather than from this generator. The
        # SDK nests several async generators and closing the outer one does not
        # close the inner ones (they sit in a reference cycle until the cyclic GC
        # runs), so aclose() between deltas would leave the HTTP response open.
        # The pump only ever waits inside the SDK (its queue is unbounded), so
        # cancelling it unwinds every SDK frame from the socket read up and the
        # SDK's own ``finally`` closes the response before the pump ends.
        queue: asyncio.Queue[_PumpItem] = asyncio.Queue()
        pump = asyncio.create_task(
            self._pump(contents, config, queue), name=f"gemini-stream:{request.turn_id}"
        )
        usage: types.GenerateContentResponseUsageMetadata | None = None
        finish: Finish | None = None
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, Exception):
                    raise self._translate(item) from item
                for text in _texts(item):
                    yield text
                usage = item.usage_metadata or usage
                finish = _finish(item) or finish
                if finish is not None and finish.reason == "blocked":
                    logger.warning(
                        "Gemini blocked the reply (model %s): %s", self._model, finish.raw
                    )
                    break
        finally:
            # Normal end, error, cancellation of the consumer, or aclose().
            pump.cancel()
            await asyncio.wait({pump})
        if usage is not None:
            yield _usage(usage)
        if finish is not None:
            yield finish

    async def _pump(
        self,
        contents: list[types.Content],
        config: types.GenerateContentConfig,
        queue: asyncio.Queue[_PumpItem],
    ) -> None:
        """Feed SDK responses, then None, into ``queue``; an exception ends the feed."""
        try:
            sdk_stream = await self._client.aio.models.generate_content_stream(
                model=self._model, contents=contents, config=config
            )
            async for response in sdk_stream:
                queue.put_nowait(response)
        # Every failure must reach the consumer, or it would wait forever; it is
        # translated and raised there (and logged by _translate).
        except Exception as exc:  # noqa: BLE001
            queue.put_nowait(exc)
        else:
            queue.put_nowait(None)

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


def build_contents(request: GenerationRequest) -> list[types.Content]:
    """Map the history to Gemini contents.

    Roles become ``user``/``model``; consecutive messages of one role are merged
    into one content with several parts, since Gemini wants alternating roles.
    Empty messages are dropped (Gemini rejects empty parts). When nothing is left,
    or the last content is the model's (the assistant starts a turn by itself),
    a user content asks the model to speak now.
    """
    contents: list[types.Content] = []
    for message in request.messages:
        if not message.text.strip():
            continue
        role = _role(message)
        part = types.Part(text=message.text)
        if contents and contents[-1].role == role and contents[-1].parts is not None:
            contents[-1].parts.append(part)
        else:
            contents.append(types.Content(role=role, parts=[part]))
    if not contents or contents[-1].role == "model":
        nudge = SPEAK_NOW_WITH_INSTRUCTIONS if request.instructions else SPEAK_NOW
        contents.append(types.Content(role="user", parts=[types.Part(text=nudge)]))
    return contents


def _role(message: Message) -> str:
    return "model" if message.role == "assistant" else "user"


def _texts(response: types.GenerateContentResponse) -> list[str]:
    """Non-empty, non-thought text parts of the first candidate (no SDK warnings)."""
    if not response.candidates:
        return []
    content = response.candidates[0].content
    if content is None or not content.parts:
        return []
    return [part.text for part in content.parts if part.text and not part.thought]


def _finish(response: types.GenerateContentResponse) -> Finish | None:
    """How this response says the reply ended, if it does."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        return Finish("blocked", raw=f"prompt {_name(feedback.block_reason)}")
    if not response.candidates or response.candidates[0].finish_reason is None:
        return None
    reason = response.candidates[0].finish_reason
    return Finish(_FINISH_REASONS.get(reason, "other"), raw=_name(reason))


def _name(value: object) -> str:
    return str(getattr(value, "value", value))


def _usage(meta: types.GenerateContentResponseUsageMetadata) -> Usage:
    """Gemini's token counts: input includes tool-use prompt tokens, output the
    candidates; the total is Gemini's own (it also counts thinking)."""
    input_tokens = (meta.prompt_token_count or 0) + (meta.tool_use_prompt_token_count or 0)
    output_tokens = meta.candidates_token_count or 0
    thinking = meta.thoughts_token_count
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=meta.total_token_count or input_tokens + output_tokens + (thinking or 0),
        cached_tokens=meta.cached_content_token_count,
        thinking_tokens=thinking,
    )
