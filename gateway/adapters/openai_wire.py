"""The OpenAI Chat Completions wire format, as far as the gateway serves it.

Requests are read leniently (unknown fields such as Vapi's call metadata are
ignored); responses follow OpenAI's shapes: ``chat.completion``,
``chat.completion.chunk`` and the error object
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import secrets
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse

from gateway.core.history import FunctionCall, Message, ToolSpec, Usage
from gateway.core.tools import ToolError, check_tool, unique
from gateway.errors import RequestError

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
#: Roles whose text becomes the system instructions of the request.
SYSTEM_ROLES: Final = frozenset({"system", "developer"})
#: Roles the gateway does not use (the legacy ``function`` role).
IGNORED_ROLES: Final = frozenset({"function"})


class ContentPart(BaseModel):
    """One part of a message's content; only ``text`` parts are read."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str
    text: str | None = None


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    arguments: str = "{}"


class ToolCall(BaseModel):
    """An assistant message's ``tool_calls`` entry."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: CalledFunction


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    """A ``tools`` entry: only functions are served."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["function"]
    function: FunctionDef


class NamedChoice(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["function"]
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Role
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = Field(default=None, max_length=128)
    name: str | None = None

    @property
    def text(self) -> str:
        """The message's text: a string, or its text parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    include_usage: bool | None = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = Field(default=None, max_length=64)
    tool_choice: Literal["auto", "none", "required"] | NamedChoice | None = None

    def tool_specs(self) -> tuple[ToolSpec, ...] | None:
        """``tools`` as checked client tools; :class:`BadRequest` names a bad one."""
        if not self.tools:
            return None
        try:
            return unique(
                (
                    check_tool(
                        t.function.name,
                        t.function.description,
                        t.function.parameters,
                        where=f"tools[{i}]",
                    )
                    for i, t in enumerate(self.tools)
                ),
                where="tools",
            )
        except ToolError as exc:
            raise BadRequest(str(exc), param="tools", code="invalid_tool") from None

    @property
    def choice(self) -> str | None:
        """``tool_choice`` as ``auto``, ``none``, ``required`` or a function name."""
        if isinstance(self.tool_choice, NamedChoice):
            return self.tool_choice.function.name
        return self.tool_choice

    @property
    def include_usage(self) -> bool:
        """The client asked for a usage chunk at the end of the stream."""
        return bool(self.stream_options and self.stream_options.include_usage)


class BadRequest(RequestError):
    """The request cannot be served; ``param`` names the field at fault."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def parse_request(raw: bytes, *, max_messages: int | None = None) -> ChatRequest:
    """The request in ``raw``; raises :class:`BadRequest` naming the problem (code
    ``too_many_messages`` for more than ``max_messages`` messages)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    messages = body.get("messages")
    if max_messages is not None and isinstance(messages, list) and len(messages) > max_messages:
        raise BadRequest(
            f"the request has {len(messages)} messages; the limit is {max_messages}",
            param="messages",
            code="too_many_messages",
        )
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        param = _param(first["loc"])
        message = "; ".join(f"{_param(e['loc']) or 'body'}: {e['msg']}" for e in errors[:5])
        raise BadRequest(message, param=param or None) from exc


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def split_messages(request: ChatRequest) -> tuple[str | None, tuple[Message, ...], int]:
    """``(system instructions, transcript, ignored message count)``.

    System and developer messages are joined into the instructions; user and
    assistant messages (with their ``tool_calls``) and ``tool`` results form the
    transcript in order; legacy ``function`` messages, and tool results that answer
    no ``tool_calls`` entry before them, are dropped. The last
    non-system message must be the user's or a tool result; with system messages
    only, the assistant speaks first (an empty transcript).
    """
    system: list[str] = []
    transcript: list[Message] = []
    last_role: Role | None = None
    ignored = 0
    names: dict[str, str] = {}
    for message in request.messages:
        if message.role in SYSTEM_ROLES:
            if message.text.strip():
                system.append(message.text.strip())
            continue
        last_role = message.role
        if message.role in IGNORED_ROLES:
            ignored += 1
        elif message.role == "user":
            transcript.append(Message("user", message.text))
        elif message.role == "tool" and (message.tool_call_id or "") not in names:
            ignored += 1  # answers no call made here: nothing the model could match it to
        elif message.role == "tool":
            call_id = message.tool_call_id or ""
            transcript.append(
                Message(
                    "tool",
                    _as_json(message.text),
                    call_id=call_id,
                    name=message.name or names.get(call_id, "function"),
                )
            )
        else:
            calls = tuple(
                FunctionCall(c.id, c.function.name, c.function.arguments or "{}")
                for c in message.tool_calls or ()
            )
            names.update((c.call_id, c.name) for c in calls)
            if message.text.strip() or calls:
                transcript.append(Message("assistant", message.text, calls=calls))
    if last_role not in (None, "user", "tool"):
        raise BadRequest(
            "the last message (besides system messages) must have role 'user' or 'tool'",
            param="messages",
        )
    if last_role == "user" and not transcript[-1].text.strip():
        raise BadRequest("the last user message has no text", param="messages")
    return ("\n\n".join(system) or None), tuple(transcript), ignored


def _as_json(text: str) -> str:
    """A tool message's content as JSON text (a string when it is not JSON)."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return orjson.dumps(text).decode()
    return text


def tool_call(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """One entry of ``delta.tool_calls`` (streamed) or ``message.tool_calls``."""
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def completion_id() -> str:
    """A fresh ``chatcmpl-…`` id."""
    return "chatcmpl-" + secrets.token_hex(12)


def chunk(
    id_: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    """One ``chat.completion.chunk``."""
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_fields(usage: Usage | None) -> dict[str, Any]:
    """OpenAI's ``usage`` object from the provider's counts (zeros when there were none)."""
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.thinking_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.thinking_tokens}
    return out


def usage_chunk(id_: str, created: int, model: str, usage: Usage | None) -> dict[str, Any]:
    """The last chunk of a stream that asked for ``stream_options.include_usage``."""
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": usage_fields(usage),
    }


def finish_reason(end_reason: str | None) -> str:
    """``length`` for a reply cut at the token limit, ``tool_calls`` for a reply
    that called functions, else ``stop``."""
    if end_reason == "function_call":
        return "tool_calls"
    return "length" if end_reason == "max_tokens" else "stop"


def completion(
    id_: str,
    created: int,
    model: str,
    text: str,
    *,
    usage: Usage | None = None,
    finish: str = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A whole ``chat.completion`` with the provider's token counts."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["content"] = text or None
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in tool_calls]
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage_fields(usage),
    }


ErrorType = Literal["invalid_request_error", "server_error"]


def error_response(
    status: int,
    message: str,
    *,
    type_: ErrorType,
    param: str | None = None,
    code: str | None = None,
    retryable: bool | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI-style error; ``retryable`` is an extra field (absent when ``None``)."""
    error: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    if retryable is not None:
        error["retryable"] = retryable
    return JSONResponse({"error": error}, status_code=status, headers=headers)
