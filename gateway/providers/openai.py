"""OpenAI-compatible provider: streams a turn through the official ``openai`` SDK.

It serves OpenAI itself and any server that speaks Chat Completions: Groq, vLLM,
Ollama, LM Studio... (``OPENAI_BASE_URL``). One ``AsyncOpenAI`` client is made at
construction and reused for every turn, with ``max_retries=0``: retrying belongs to
the gateway, which may only retry before the first chunk was sent. The SDK always
uses httpx2 (aiohttp only when handed an aiohttp client, which this never does),
so its behaviour does not change with what else is installed.

Each request streams with ``stream_options.include_usage`` so the server's own
token counts come back as a :class:`~gateway.core.history.Usage`; the choice's
``finish_reason`` becomes a :class:`~gateway.core.history.Finish` (``length`` is
``max_tokens``, ``content_filter`` is ``blocked``). The output limit is sent as
``max_completion_tokens`` to OpenAI and as the older ``max_tokens``, which every
compatible server reads, elsewhere. Gemini's thinking settings are not sent.

Function calls: the request's tools go as ``tools`` (and ``tool_choice``); the
streamed ``tool_calls`` deltas are put together by index and yielded as
:class:`~gateway.core.history.FunctionCall` items when the stream ends (the finish
reason ``tool_calls`` is a normal stop); calls and results in the history are
sent as assistant ``tool_calls`` and ``tool`` messages.

Closing the stream (cancelling the consumer, or ``aclose()``) closes the SDK
stream and with it the HTTP response. SDK errors are translated into
:class:`~gateway.providers.base.ProviderError`; messages name the server, the
model, the HTTP status and the server's error code only: never the API key, the
prompt or the model's text.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import httpx2
import openai
import pydantic
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from openai.types.completion_usage import CompletionUsage

from gateway.core.history import (
    Finish,
    FinishReason,
    FunctionCall,
    GenerationRequest,
    StreamItem,
    Usage,
)
from gateway.providers.base import (
    SPEAK_NOW,
    SPEAK_NOW_WITH_INSTRUCTIONS,
    ProviderError,
    build_system_instruction,
)
from gateway.providers.http import sharded_transport

if TYPE_CHECKING:
    from gateway.settings import Settings

logger = logging.getLogger("gateway.providers.openai")

#: Sent as the API key to a server that takes none (the SDK insists on one).
NO_KEY: Final = "no-key"

_FINISH_REASONS: Final[dict[str, FinishReason]] = {
    "stop": "stop",
    "tool_calls": "stop",
    "function_call": "stop",
    "length": "max_tokens",
    "content_filter": "blocked",
}
#: Error codes from a server's error body that are safe to repeat (identifiers).
_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def from_settings(settings: Settings) -> OpenAIProvider:
    """The provider ``GATEWAY_PROVIDER=openai`` (or an OpenAI key) chooses."""
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    return OpenAIProvider(
        api_key=key or None,
        model=settings.openai_model,
        base_url=settings.openai_base_url,
        timeout_s=settings.openai_timeout_s,
    )


class OpenAIProvider:
    """:class:`~gateway.providers.base.LLMProvider` backed by a Chat Completions API."""

    def __init__(
        self,
        *,
        api_key: str | None,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        """Create the client.

        ``base_url`` is the API root (``https://api.groq.com/openai/v1``,
        ``http://localhost:11434/v1``); ``None`` is OpenAI. ``api_key`` may be
        ``None`` for a local server that takes none. ``timeout_s`` bounds connecting
        and each wait for bytes: the longest silence tolerated within a stream.
        """
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._model = model
        self._official = base_url is None
        self._label = "OpenAI" if base_url is None else (urlsplit(base_url).netloc or base_url)
        self._client = openai.AsyncOpenAI(
            api_key=api_key or NO_KEY,
            base_url=base_url,
            max_retries=0,
            timeout=httpx2.Timeout(timeout_s),
            http_client=openai.DefaultAsyncHttpxClient(transport=sharded_transport()),
        )

    @property
    def name(self) -> str:
        """Always ``openai`` (whichever compatible server answers)."""
        return "openai"

    @property
    def model(self) -> str:
        """The model id sent with every request, e.g. ``gpt-4o-mini``."""
        return self._model

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        """Yield the reply's text deltas, then its usage and finish."""
        params = self._params(request)
        try:
            sdk_stream = await self._client.chat.completions.create(**params)
        except Exception as exc:
            raise self._translate(exc) from exc
        usage: CompletionUsage | None = None
        finish: Finish | None = None
        calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        try:
            async for chunk in sdk_stream:
                usage = chunk.usage or usage
                _gather_calls(chunk, calls)
                for text, reason in _choice(chunk):
                    if text:
                        yield text
                    if reason is not None:
                        finish = Finish(_FINISH_REASONS.get(reason, "other"), raw=reason)
        except Exception as exc:
            raise self._translate(exc) from exc
        finally:
            # Normal end, error, cancellation of the consumer, or aclose().
            await sdk_stream.close()
        for index in sorted(calls):
            call_id, name, arguments = calls[index]
            if name:
                yield FunctionCall(call_id, name, arguments or "{}")
        if usage is not None:
            yield _usage(usage)
        if finish is not None:
            yield finish

    def _params(self, request: GenerationRequest) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for ``request``."""
        params: dict[str, Any] = {
            "model": self._model,
            "messages": build_messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters or {"type": "object"},
                    },
                }
                for tool in request.tools
            ]
            choice = request.tool_choice
            if choice is not None:
                params["tool_choice"] = (
                    choice
                    if choice in ("auto", "none", "required")
                    else {"type": "function", "function": {"name": choice}}
                )
        settings = request.settings
        if settings.temperature is not None:
            params["temperature"] = settings.temperature
        if settings.max_output_tokens is not None:
            key = "max_completion_tokens" if self._official else "max_tokens"
            params[key] = settings.max_output_tokens
        return params

    async def aclose(self) -> None:
        """Close the SDK's HTTP client."""
        await self._client.close()

    def _translate(self, exc: Exception) -> ProviderError:
        """Map an SDK or transport exception to a :class:`ProviderError`."""
        error = _translate(exc, f"{self._label} ({self._model})", self._model)
        logger.warning(
            "OpenAI-compatible call failed: code=%s status=%s retryable=%s cause=%s",
            error.code,
            error.status,
            error.retryable,
            type(exc).__name__,
        )
        return error


def _translate(exc: Exception, who: str, model: str) -> ProviderError:
    """HTTP 429 rate_limited (but an exhausted quota is not retryable), 5xx and 409
    unavailable, 408 and timeouts timeout, connection errors and cut streams
    connection_lost (all retryable); 401/403 auth_failed, 404 model_not_found,
    other 4xx bad_request, an error event in the stream unavailable (retryable),
    unparsable chunks bad_response; anything else provider_error."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = _error_code(exc.body)
        label = f"{who} returned HTTP {status}" + (f" {code}" if code else "")
        if status == 401:
            return ProviderError(
                f"{label}: the API key was refused; check OPENAI_API_KEY",
                code="auth_failed",
                status=status,
            )
        if status == 403:
            return ProviderError(
                f"{label}: the API key may not use this model; check OPENAI_API_KEY",
                code="auth_failed",
                status=status,
            )
        if status == 404:
            return ProviderError(
                f"{label}: there is no model {model!r} there; check OPENAI_MODEL and "
                "OPENAI_BASE_URL",
                code="model_not_found",
                status=status,
            )
        if status == 429:
            quota = code == "insufficient_quota"
            return ProviderError(
                f"{label}: the account's quota is used up" if quota else label,
                code="rate_limited",
                retryable=not quota,
                status=status,
            )
        if status == 408:
            return ProviderError(label, code="timeout", retryable=True, status=status)
        if status == 409 or 500 <= status < 600:
            return ProviderError(label, code="unavailable", retryable=True, status=status)
        if 400 <= status < 500:
            return ProviderError(label, code="bad_request", status=status)
        return ProviderError(label, code="provider_error", status=status)
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return ProviderError(f"{who} timed out", code="timeout", retryable=True)
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return ProviderError(
            f"{who}: the connection failed or was cut", code="connection_lost", retryable=True
        )
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError):
        return ProviderError(f"{who} sent a malformed response", code="bad_response")
    if isinstance(exc, pydantic.ValidationError):
        return ProviderError(f"{who} sent a malformed response", code="bad_response")
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        code = _error_code(exc.body)
        return ProviderError(
            f"{who} reported an error mid-stream" + (f": {code}" if code else ""),
            code="unavailable",
            retryable=True,
        )
    return ProviderError(f"{who} call failed: {type(exc).__name__}", code="provider_error")


def _error_code(body: object) -> str | None:
    """The ``code`` (or ``type``) of an OpenAI-style error body, if it is an identifier."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and _SAFE_CODE.match(value):
            return value
    return None


def build_messages(request: GenerationRequest) -> list[ChatCompletionMessageParam]:
    """The history as Chat Completions messages, after the system message.

    Empty messages are dropped; when nothing is left, or the last message is the
    assistant's (it starts a turn by itself), a user message asks it to speak now.
    """
    messages: list[ChatCompletionMessageParam] = []
    system = build_system_instruction(request)
    if system is not None:
        messages.append({"role": "system", "content": system})
    last_role = None
    for message in request.messages:
        if message.role == "tool":
            messages.append(
                {"role": "tool", "tool_call_id": message.call_id or "", "content": message.text}
            )
        elif message.calls:
            messages.append(
                {
                    "role": "assistant",
                    "content": message.text or None,
                    "tool_calls": [
                        {
                            "id": call.call_id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in message.calls
                    ],
                }
            )
        elif not message.text.strip():
            continue
        elif message.role == "user":
            messages.append({"role": "user", "content": message.text})
        else:
            messages.append({"role": "assistant", "content": message.text})
        last_role = message.role
    if last_role not in ("user", "tool"):
        nudge = SPEAK_NOW_WITH_INSTRUCTIONS if request.instructions else SPEAK_NOW
        messages.append({"role": "user", "content": nudge})
    return messages


def _gather_calls(chunk: ChatCompletionChunk, calls: dict[int, list[str]]) -> None:
    """Add the chunk's ``tool_calls`` pieces to ``calls`` (by index: id, name, arguments)."""
    if not chunk.choices or chunk.choices[0].delta is None:
        return
    for piece in chunk.choices[0].delta.tool_calls or ():
        entry = calls.setdefault(piece.index, ["", "", ""])
        if piece.id:
            entry[0] = piece.id
        if piece.function is not None:
            entry[1] += piece.function.name or ""
            entry[2] += piece.function.arguments or ""


def _choice(chunk: ChatCompletionChunk) -> list[tuple[str | None, str | None]]:
    """``(text, finish_reason)`` of the first choice of ``chunk`` (none in a usage chunk)."""
    if not chunk.choices:
        return []
    choice = chunk.choices[0]
    return [(choice.delta.content if choice.delta else None, choice.finish_reason)]


def _usage(usage: CompletionUsage) -> Usage:
    """The server's counts: prompt and completion tokens (the latter including any
    reasoning), with cached and reasoning tokens when it says."""
    prompt = usage.prompt_tokens_details
    completion = usage.completion_tokens_details
    return Usage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        cached_tokens=prompt.cached_tokens if prompt is not None else None,
        thinking_tokens=completion.reasoning_tokens if completion is not None else None,
    )
