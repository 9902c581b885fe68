"""OpenAI-compatible ``POST /v1/chat/completions``: the custom-LLM hook of Vapi,
ElevenLabs Agents and Deepgram's Voice Agent.

Stateless: the platform sends the whole conversation every time, so each request
runs in an ephemeral session (a fresh in-memory store) that answers the
transcript in one turn and is stopped when the response is done or the client
leaves. Streamed deltas are the chunker's whole sentences, so the platform's TTS
gets speakable text. See docs/adapters/openai-compatible.md.

A provider failure is answered only after the gateway's own retries, so the error
carries ``x-should-retry: false`` (which the OpenAI SDKs honour): a platform's
retries on top would multiply the calls to the model. Bodies over
``OPENAI_COMPAT_MAX_BODY_BYTES`` are refused with 413, requests with more than
``OPENAI_COMPAT_MAX_MESSAGES`` messages with 400; a large body is parsed in a
worker thread so that other sessions never wait for it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any, Final

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.adapters import openai_wire as wire
from gateway.adapters.openai_wire import BadRequest
from gateway.adapters.sse import (
    SSE_DONE,
    BodyTooLarge,
    Called,
    Chunk,
    Cut,
    Ended,
    Failure,
    Frames,
    SseResponse,
    TurnFollower,
    read_body,
    sse_data,
)
from gateway.core.chunker import ChunkMode
from gateway.core.events import Error, ResponseCallControl, TranscriptTurn
from gateway.core.history import Message, ToolSpec
from gateway.deps import manager_of
from gateway.runtime import SessionRuntime
from gateway.sessions import SessionManager
from gateway.settings import Settings
from gateway.stores.memory import MemoryStore

log = logging.getLogger("gateway.adapters.openai")

PATH: Final = "/v1/chat/completions"
#: Bodies larger than this are parsed in a worker thread, off the event loop.
PARSE_IN_THREAD_BYTES: Final = 128 << 10
#: ``model`` in responses when the session never said which model it runs.
FALLBACK_MODEL: Final = "voice-gateway"


def api_keys(settings: Settings) -> tuple[bytes, ...]:
    """The accepted bearer keys (empty: the endpoint is open)."""
    raw = settings.openai_api_keys or ""
    return tuple(key.strip().encode() for key in raw.split(",") if key.strip())


def authorized(header: str | None, keys: tuple[bytes, ...]) -> bool:
    """Whether ``Authorization`` holds one of ``keys``, compared in constant time."""
    scheme, _, given = (header or "").strip().partition(" ")
    token = given.strip().encode() if scheme.lower() == "bearer" else b""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token, key)
    return matched and bool(token)


def _provider_error(error: Error) -> Response:
    retry = "retrying later may succeed" if error.retryable else "retrying will not help"
    return wire.error_response(
        502,
        f"{error.message} ({retry})",
        type_="server_error",
        code=error.detail or str(error.code),
        retryable=bool(error.retryable),
        # The gateway already retried what could be retried (before the first chunk).
        headers={"x-should-retry": "false"},
    )


def _parse(
    raw: bytes, max_messages: int
) -> tuple[wire.ChatRequest, str | None, tuple[Message, ...], int]:
    chat = wire.parse_request(raw, max_messages=max_messages)
    system, transcript, ignored = wire.split_messages(chat)
    chat.tool_specs()  # raises BadRequest naming a bad tool
    return chat, system, transcript, ignored


def _tool_call(index: int, called: Called) -> dict[str, Any]:
    """A call as OpenAI's ``tool_calls`` entry (call control as an ordinary function)."""
    event = called.event
    if isinstance(event, ResponseCallControl):
        name: str = event.action
        args = {k: v for k, v in (("to", event.to), ("digits", event.digits)) if v is not None}
        if event.reason is not None:
            args["reason"] = event.reason
    else:
        name, args = event.name, event.arguments
    return wire.tool_call(index, event.call_id, name, orjson.dumps(args).decode())


def _cut(reason: str) -> Response:
    return wire.error_response(
        503, f"the response was cut: {reason}", type_="server_error", retryable=True
    )


class _Completion:
    """One request's ephemeral session and the turn answering its transcript.

    The session is made in :meth:`start`, inside the response's generator, so a
    response that never runs leaves nothing behind.
    """

    def __init__(
        self,
        manager: SessionManager,
        system: str | None,
        transcript: tuple[Message, ...],
        chunk_mode: ChunkMode,
        *,
        include_usage: bool = False,
        tools: tuple[ToolSpec, ...] | None = None,
        tool_choice: str | None = None,
    ) -> None:
        self.id = wire.completion_id()
        self.include_usage = include_usage
        self.created = int(time.time())
        self._manager = manager
        self._chunk_mode = chunk_mode
        self._turn = TranscriptTurn(
            transcript,
            reply_to=self.id,
            instructions=system,
            tools=tools or (),
            tool_choice=tool_choice,
        )
        self._runtime: SessionRuntime | None = None
        self._follower: TurnFollower | None = None

    def start(self) -> TurnFollower:
        """Make the session and start the turn; the follower reports on it."""
        runtime = self._runtime = self._manager.ephemeral(MemoryStore())
        runtime.session.use_chunk_mode(self._chunk_mode)
        follower = self._follower = TurnFollower(runtime)
        follower.start(self._turn)
        return follower

    @property
    def model(self) -> str:
        ready = self._follower.ready if self._follower is not None else None
        return ready.model if ready is not None and ready.model else FALLBACK_MODEL

    async def aclose(self) -> None:
        """Detach, stop the session (cancelling a streaming turn), and wait for it."""
        runtime, follower = self._runtime, self._follower
        self._runtime = self._follower = None
        if runtime is None:
            return
        try:
            if follower is not None:
                await follower.aclose(interrupt=False)
        finally:
            runtime.stop()
            await runtime.stopped()


async def _streamed(completion: _Completion) -> Frames:
    """SSE ``chat.completion.chunk`` frames, one per sentence, then ``[DONE]``.

    The 200 stream starts with the first sentence: a turn that fails before it is
    answered with a 502 error instead, so the platform can retry or fall back.
    """
    started = False
    finish, usage = "stop", None
    calls = 0
    try:
        follower = completion.start()
        async for update in follower:
            match update:
                case Chunk(text=text):
                    if not started:
                        started = True
                        yield _delta(completion, {"role": "assistant", "content": ""})
                    yield _delta(completion, {"content": text + " "})
                case Called():
                    # As OpenAI streams a call: its id and name, then its arguments.
                    call = _tool_call(calls, update)
                    head: dict[str, Any] = {
                        "tool_calls": [{**call, "function": {**call["function"], "arguments": ""}}]
                    }
                    if not started:
                        started = True
                        head = {"role": "assistant", "content": None, **head}
                    yield _delta(completion, head)
                    arguments = {
                        "index": calls,
                        "function": {"arguments": call["function"]["arguments"]},
                    }
                    yield _delta(completion, {"tool_calls": [arguments]})
                    calls += 1
                case Failure(error=error):
                    if not started:
                        yield _provider_error(error)
                        return
                    log.info(
                        "openai: stream %s failed after %d chunk(s): %s",
                        completion.id,
                        len(follower.chunks),
                        error.detail or error.code,
                    )
                case Cut(reason=reason) if not started:
                    yield _cut(reason)
                    return
                case Ended(end=end):
                    finish = "tool_calls" if calls else wire.finish_reason(end.reason)
                    usage = end.usage
                case Cut():
                    pass
        if not started:
            yield _delta(completion, {"role": "assistant", "content": ""})
        yield _delta(completion, {}, finish_reason=finish)
        if completion.include_usage:
            yield sse_data(
                wire.usage_chunk(completion.id, completion.created, completion.model, usage)
            )
        yield SSE_DONE
    finally:
        await completion.aclose()


def _delta(
    completion: _Completion, delta: dict[str, Any], finish_reason: str | None = None
) -> bytes:
    return sse_data(
        wire.chunk(completion.id, completion.created, completion.model, delta, finish_reason)
    )


async def _whole(completion: _Completion) -> Frames:
    """One ``chat.completion`` JSON response (computed while watching the client)."""
    calls: list[dict[str, Any]] = []
    try:
        follower = completion.start()
        async for update in follower:
            match update:
                case Called():
                    calls.append(_tool_call(len(calls), update))
                case Failure(error=error):
                    yield _provider_error(error)
                    return
                case Cut(reason=reason):
                    yield _cut(reason)
                    return
                case Ended(end=end):
                    yield JSONResponse(
                        wire.completion(
                            completion.id,
                            completion.created,
                            completion.model,
                            end.text,
                            usage=end.usage,
                            finish="tool_calls" if calls else wire.finish_reason(end.reason),
                            tool_calls=calls,
                        )
                    )
                    return
    finally:
        await completion.aclose()


def routes(settings: Settings) -> list[BaseRoute]:
    """The chat completions route."""
    keys = api_keys(settings)
    if not keys:
        log.info("openai: OPENAI_COMPAT_API_KEYS is not set; %s needs no key", PATH)
    max_text_chars = settings.max_text_chars
    max_body = settings.openai_compat_max_body_bytes
    max_messages = settings.openai_compat_max_messages

    async def chat_completions(request: Request) -> Response:
        if keys and not authorized(request.headers.get("authorization"), keys):
            return wire.error_response(
                401,
                "a valid API key is required: send 'Authorization: Bearer <key>'",
                type_="invalid_request_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            raw = await read_body(request, max_body)
            if len(raw) > PARSE_IN_THREAD_BYTES:
                chat, system, transcript, ignored = await asyncio.to_thread(
                    _parse, raw, max_messages
                )
            else:
                chat, system, transcript, ignored = _parse(raw, max_messages)
        except BodyTooLarge:
            return wire.error_response(
                413,
                f"the request body exceeds {max_body} bytes (OPENAI_COMPAT_MAX_BODY_BYTES)",
                type_="invalid_request_error",
                code="request_too_large",
            )
        except ClientDisconnect:
            return Response(status_code=400)
        except BadRequest as bad:
            return wire.error_response(
                400, bad.message, type_="invalid_request_error", param=bad.param, code=bad.code
            )
        if (
            transcript
            and transcript[-1].role == "user"
            and len(transcript[-1].text.strip()) > max_text_chars
        ):
            return wire.error_response(
                400,
                f"the last user message is longer than {max_text_chars} characters",
                type_="invalid_request_error",
                param="messages",
                code="text_too_long",
            )
        if system is not None and len(system) > settings.max_instructions_chars:
            return wire.error_response(
                400,
                f"the system messages hold {len(system)} characters; "
                f"the limit is {settings.max_instructions_chars} (GATEWAY_MAX_INSTRUCTIONS_CHARS)",
                type_="invalid_request_error",
                param="messages",
                code="instructions_too_long",
            )
        if ignored:
            log.debug("openai: ignored %d tool/function message(s)", ignored)
        completion = _Completion(
            manager_of(request),
            system,
            transcript,
            settings.openai_chunking,
            include_usage=chat.include_usage,
            tools=chat.tool_specs(),
            tool_choice=chat.choice,
        )
        return SseResponse(_streamed(completion) if chat.stream else _whole(completion))

    return [Route(PATH, chat_completions, methods=["POST"])]
