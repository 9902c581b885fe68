"""Gemini provider: streams a turn through the google-genai SDK.

One ``genai.Client`` is made at construction and reused for every turn. The SDK
is configured so that it never retries on its own (``HttpRetryOptions(attempts=1)``,
automatic continuation and automatic function calling off): retrying belongs to
the caller, which may only retry before the first delta was sent.

SDK errors are translated into :class:`~gateway.providers.base.ProviderError`.
Messages carry the model, the HTTP status and Google's status name only: never the
API key, the prompt or the model's text (neither do the logs).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Final

import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from gateway.core.history import GenerationRequest, Message
from gateway.providers.base import ProviderError

logger = logging.getLogger("gateway.providers.gemini")

#: What the pump hands to the consumer: a response, the error that ended the
#: stream, or None at the end.
_PumpItem = types.GenerateContentResponse | Exception | None

#: Sent as the last user content when the assistant speaks first or again
#: (``response.create``): Gemini must be asked by a user turn, and the turn's
#: instructions are already in the system instruction.
SPEAK_NOW_WITH_INSTRUCTIONS: Final = (
    "(No new user input. It is your turn to speak now: follow the instructions for this turn.)"
)
SPEAK_NOW: Final = "(No new user input. It is your turn to speak now.)"

#: Finish reasons that mean the reply was withheld by a filter.
_BLOCKED_FINISH_REASONS: Final = frozenset(
    {
        types.FinishReason.SAFETY,
        types.FinishReason.RECITATION,
        types.FinishReason.BLOCKLIST,
        types.FinishReason.PROHIBITED_CONTENT,
        types.FinishReason.SPII,
    }
)


def _transport_errors(name: str) -> tuple[type[Exception], ...]:
    """``name`` from every HTTP library the SDK may use (httpx2 by default, or httpx)."""
    found: list[type[Exception]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            found.append(cls)
    return tuple(found)


_TIMEOUT_ERRORS: Final = _transport_errors("TimeoutException")
# Connect errors, reset/closed connections, a body cut mid-way (RemoteProtocolError).
_CONNECTION_ERRORS: Final = _transport_errors("TransportError")
_DECODING_ERRORS: Final = _transport_errors("DecodingError")
_MALFORMED_ERRORS: Final = (
    genai_errors.UnknownApiResponseError,  # an SSE event that is not JSON
    json.JSONDecodeError,
    pydantic.ValidationError,  # JSON that is not a GenerateContentResponse
    *_DECODING_ERRORS,
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
        self._client = genai.Client(
            vertexai=False,  # ignore GOOGLE_GENAI_USE_VERTEXAI from the environment
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url,
                timeout=max(1, round(timeout_s * 1000)),  # milliseconds
                retry_options=types.HttpRetryOptions(attempts=1),
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

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Yield the reply's text deltas; see the module docstring for errors.

        A reply blocked by a safety filter before any text raises
        ``ProviderError(code="blocked")`` (not retryable), so the caller can tell
        the user instead of playing silence; once text was yielded, a block just
        ends the stream. Thought parts are skipped.
        """
        contents = build_contents(request)
        config = types.GenerateContentConfig(
            system_instruction=build_system_instruction(request),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            automatic_continuation=False,
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
        yielded = False
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise self._translate(item) from item
                for text in _texts(item):
                    yielded = True
                    yield text
                if not yielded and _is_blocked(item):
                    logger.warning("Gemini blocked the reply (model %s)", self._model)
                    raise ProviderError(f"Gemini ({self._model}) blocked the reply", code="blocked")
        finally:
            # Normal end, error, cancellation of the consumer, or aclose().
            pump.cancel()
            await asyncio.wait({pump})

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
        """Close the SDK's HTTP clients (async pool and the unused sync one)."""
        await self._client.aio.aclose()
        self._client.close()

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
    (all retryable); 401/403 auth_failed, other 4xx bad_request, unparsable or
    ill-shaped responses bad_response (not retryable); connect errors and streams
    cut mid-way connection_lost (retryable); anything else provider_error.
    """
    if isinstance(exc, genai_errors.APIError):
        status = exc.code if isinstance(exc.code, int) else None
        label = f"Gemini ({model}) returned HTTP {status} {exc.status or ''}".rstrip()
        if status == 429:
            return ProviderError(label, code="rate_limited", retryable=True, status=status)
        if status in (401, 403):
            return ProviderError(label, code="auth_failed", status=status)
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


def build_system_instruction(request: GenerationRequest) -> str | None:
    """The session's system instruction followed by the turn's instructions, if any."""
    sections: list[str] = []
    if request.system_instruction and request.system_instruction.strip():
        sections.append(request.system_instruction.strip())
    if request.instructions and request.instructions.strip():
        sections.append("Instructions for this turn:\n" + request.instructions.strip())
    return "\n\n".join(sections) or None


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


def _is_blocked(response: types.GenerateContentResponse) -> bool:
    """Whether this response says the prompt or the reply was blocked."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        return True
    if not response.candidates:
        return False
    return response.candidates[0].finish_reason in _BLOCKED_FINISH_REASONS
