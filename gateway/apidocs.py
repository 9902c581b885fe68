"""Machine-readable API documents, generated from the models the code uses.

- :func:`openapi_document`: OpenAPI 3.1 for the HTTP API, served at
  ``/openapi.json``. The session API answers with dicts, so its answers are
  described by the strict pydantic models below, and the tests validate real
  answers against them (an extra or missing field fails). The platform
  endpoints use their own request models (``ChatRequest``, Layercode's
  webhook union).
- :func:`asyncapi_document`: AsyncAPI 3.0 for ``/ws`` (the client frames'
  discriminated union and every server event dataclass) and the platform
  WebSockets (``/twilio``, ``/retell``: their inbound unions; their few outbound
  frames are described here and the tests validate the frames the code builds).
  ``docs/asyncapi.json`` is its output, and a test fails when the two differ:
  run ``python -m gateway.apidocs`` after changing a wire model.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter

from gateway import __version__
from gateway.adapters import layercode_wire, openai_wire, retell_wire, twilio_wire
from gateway.core import events
from gateway.core.wire import _CLIENT_FRAME

ASYNCAPI_PATH = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"
REF = "#/components/schemas/{model}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Strict):
    code: str
    message: str


class ApiError(_Strict):
    """Every 4xx/5xx answer of the HTTP API."""

    error: ErrorBody


class SessionCreated(_Strict):
    session_id: str
    resume_token: str
    created_at: float
    ws_path: str


class SessionSummary(_Strict):
    session_id: str
    #: ``client``, or the platform whose call it is (only admin keys see those).
    kind: Literal["client", "twilio", "retell", "layercode"]
    created_at: float
    updated_at: float
    live: bool


class SessionPage(_Strict):
    sessions: list[SessionSummary]
    next_cursor: str | None


class TurnLatency(_Strict):
    first_token_ms: int | None
    first_chunk_ms: int | None
    total_ms: int | None


class TurnView(_Strict):
    turn_id: str
    in_reply_to: str | None
    user_text: str | None
    status: Literal["streaming", "completed", "interrupted", "superseded", "failed"]
    text: str
    spoken_text: str | None
    reason: str | None
    started_at: float
    ended_at: float | None
    latency: TurnLatency


class TokenUsage(_Strict):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_tokens: int | None = None
    thinking_tokens: int | None = None


class SessionDetail(SessionSummary):
    turns: list[TurnView]
    usage: TokenUsage | None


class Health(_Strict):
    status: Literal["ok"]
    version: str


class Ready(_Strict):
    status: Literal["ready", "unavailable"]
    store: Literal["unreachable"] | None = None


class StatusMinute(_Strict):
    minute: float
    turns: int
    failed: int
    first_chunk_p50_s: float | None
    first_chunk_p90_s: float | None
    first_chunk_p99_s: float | None


class StatusView(_Strict):
    """``/status.json``: what the status page draws."""

    time: float
    live_sessions: int
    connections: dict[str, int]
    turns_last_minute: int
    minutes: list[StatusMinute]


_MODELS: tuple[type[BaseModel], ...] = (
    ApiError,
    SessionCreated,
    SessionPage,
    SessionDetail,
    Health,
    Ready,
    StatusView,
    openai_wire.ChatRequest,
)


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template=REF, mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    webhook = TypeAdapter(layercode_wire.Webhook).json_schema(ref_template=REF)
    schemas.update(webhook.pop("$defs", {}))
    schemas["LayercodeWebhook"] = webhook
    return schemas


def _json(model: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("ApiError", description)


_AUTH: list[dict[str, list[str]]] = [{"bearer": []}, {}]
_SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
_SSE = {"text/event-stream": {"schema": {"type": "string"}}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API."""
    unauthorized = _error("Authentication is on and the credential is missing or wrong.")
    paths: dict[str, Any] = {
        "/sessions": {
            "post": {
                "summary": "Create a session",
                "operationId": "createSession",
                "security": _AUTH,
                "responses": {
                    "201": _json("SessionCreated", "Created: connect to ws_path."),
                    "401": unauthorized,
                    "429": _error("The caller owns GATEWAY_MAX_SESSIONS_PER_PRINCIPAL already."),
                },
            },
            "get": {
                "summary": "List sessions, newest first",
                "operationId": "listSessions",
                "security": _AUTH,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json("SessionPage", "A page of sessions."),
                    "400": _error("invalid_limit or invalid_cursor."),
                    "401": unauthorized,
                },
            },
        },
        "/sessions/{session_id}": {
            "parameters": [_SESSION_ID],
            "get": {
                "summary": "One session with its transcript",
                "operationId": "getSession",
                "security": _AUTH,
                "responses": {
                    "200": _json("SessionDetail", "The session and its turns."),
                    "401": unauthorized,
                    "404": _error("unknown_session."),
                },
            },
            "delete": {
                "summary": "End and delete a session",
                "operationId": "deleteSession",
                "security": _AUTH,
                "responses": {
                    "204": {"description": "Deleted."},
                    "401": unauthorized,
                    "404": _error("unknown_session."),
                },
            },
        },
        "/health": {
            "get": {
                "summary": "Liveness",
                "operationId": "health",
                "responses": {"200": _json("Health", "The process serves.")},
            }
        },
        "/ready": {
            "get": {
                "summary": "Readiness: the session store answers",
                "operationId": "ready",
                "responses": {
                    "200": _json("Ready", "Ready."),
                    "503": _json("Ready", "The store is unreachable."),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "operationId": "metrics",
                "security": [{"metricsKey": []}, {}],
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _error("GATEWAY_METRICS_KEY is set and was not given."),
                },
            }
        },
        "/status.json": {
            "get": {
                "summary": "What the /status page draws",
                "operationId": "status",
                "security": [{"metricsKey": []}, {}],
                "responses": {
                    "200": _json("StatusView", "Live figures and the last 30 minutes."),
                    "401": _error("GATEWAY_METRICS_KEY is set and was not given."),
                },
            }
        },
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI-compatible chat completions (Vapi, ElevenLabs, Deepgram)",
                "operationId": "chatCompletions",
                "security": [{"bearer": []}, {}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model="ChatRequest")}}
                    },
                },
                "responses": {
                    "200": {
                        "description": "A chat.completion, or with stream: true "
                        "chat.completion.chunk events ending with data: [DONE].",
                        "content": {"application/json": {"schema": {"type": "object"}}, **_SSE},
                    },
                    "400": {"description": "An OpenAI-style error object."},
                    "401": {"description": "OPENAI_COMPAT_API_KEYS is set and was not given."},
                },
            }
        },
        "/layercode/agent": {
            "post": {
                "summary": "Layercode agent webhook",
                "operationId": "layercodeAgent",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": REF.format(model="LayercodeWebhook")}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Server-Sent Events: response.tts, then response.end.",
                        "content": _SSE,
                    },
                    "400": {"description": "Not a webhook the gateway can read."},
                    "401": {"description": "A missing or wrong layercode-signature."},
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "voice-gateway HTTP API",
            "version": __version__,
            "description": "Sessions, health and operations. The realtime protocol is "
            "WebSocket: see docs/protocol.md and docs/asyncapi.json.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A GATEWAY_API_KEYS key or a JWT.",
                },
                "metricsKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "GATEWAY_METRICS_KEY.",
                },
            },
        },
    }


# --- AsyncAPI -------------------------------------------------------------------------


def server_event_types() -> list[type[Any]]:
    """Every server event dataclass of the native protocol."""
    return list(typing.get_args(events.ServerEvent))


def _type_of(cls: type[Any]) -> str:
    return str(cls.__dataclass_fields__["type"].default)


def _frame(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
    }


#: The frames the platform adapters send (built by twilio_wire / retell_wire).
OUTBOUND_SCHEMAS: dict[str, dict[str, Any]] = {
    "TwilioText": _frame(
        {
            "type": {"const": "text"},
            "token": {"type": "string"},
            "last": {"type": "boolean"},
        },
        ["type", "token", "last"],
    ),
    "TwilioEnd": _frame(
        {"type": {"const": "end"}, "handoffData": {"type": "string"}},
        ["type", "handoffData"],
    ),
    "RetellConfig": _frame(
        {
            "response_type": {"const": "config"},
            "config": _frame(
                {"auto_reconnect": {"type": "boolean"}, "call_details": {"type": "boolean"}},
                ["auto_reconnect", "call_details"],
            ),
        },
        ["response_type", "config"],
    ),
    "RetellPingPong": _frame(
        {"response_type": {"const": "ping_pong"}, "timestamp": {"type": "number"}},
        ["response_type", "timestamp"],
    ),
    "RetellResponse": _frame(
        {
            "response_type": {"const": "response"},
            "response_id": {"type": "integer"},
            "content": {"type": "string"},
            "content_complete": {"type": "boolean"},
            "end_call": {"type": "boolean"},
        },
        ["response_type", "response_id", "content", "content_complete", "end_call"],
    ),
}


def _channel_messages(names: list[str]) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/messages/{name}"} for name in names}


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``/ws`` and the platform WebSockets."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    def add(name: str, schema: dict[str, Any], title: str) -> None:
        defs = {**schema.pop("$defs", {}), name: schema}
        for key, value in defs.items():
            if schemas.setdefault(key, value) != value:
                raise ValueError(f"two wire models are both called {key}: rename one")
        messages[name] = {
            "name": name,
            "title": title,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }

    add("ClientEvent", _CLIENT_FRAME.json_schema(ref_template=REF), "Any client event")
    server_names = []
    for cls in server_event_types():
        name = cls.__name__
        add(
            name,
            TypeAdapter(cls).json_schema(ref_template=REF, mode="serialization"),
            _type_of(cls),
        )
        server_names.append(name)
    add(
        "TwilioInbound",
        twilio_wire.INBOUND.json_schema(ref_template=REF),
        "A ConversationRelay frame",
    )
    add("RetellInbound", retell_wire.INBOUND.json_schema(ref_template=REF), "A Retell frame")
    for name, schema in OUTBOUND_SCHEMAS.items():
        add(name, dict(schema), name)

    channels = {
        "native": {
            "address": "/ws",
            "title": "Native protocol v1",
            "description": "One conversation per socket; see docs/protocol.md.",
            "messages": _channel_messages(["ClientEvent", *server_names]),
        },
        "twilio": {
            "address": "/twilio",
            "title": "Twilio ConversationRelay (and Telnyx)",
            "messages": _channel_messages(["TwilioInbound", "TwilioText", "TwilioEnd"]),
        },
        "retell": {
            "address": "/retell/{call_id}",
            "title": "Retell custom LLM",
            "parameters": {"call_id": {"description": "Retell's call id."}},
            "messages": _channel_messages(
                ["RetellInbound", "RetellConfig", "RetellPingPong", "RetellResponse"]
            ),
        },
    }

    def operation(channel: str, action: str, names: list[str]) -> dict[str, Any]:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{n}"} for n in names],
        }

    operations = {
        "nativeReceive": operation("native", "receive", ["ClientEvent"]),
        "nativeSend": operation("native", "send", server_names),
        "twilioReceive": operation("twilio", "receive", ["TwilioInbound"]),
        "twilioSend": operation("twilio", "send", ["TwilioText", "TwilioEnd"]),
        "retellReceive": operation("retell", "receive", ["RetellInbound"]),
        "retellSend": operation(
            "retell", "send", ["RetellConfig", "RetellPingPong", "RetellResponse"]
        ),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "voice-gateway WebSockets",
            "version": __version__,
            "description": "Generated by `python -m gateway.apidocs` from the wire models; "
            "operations are from the gateway's side (receive: what clients send).",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def render_asyncapi() -> str:
    """``docs/asyncapi.json`` as it should read."""
    return orjson.dumps(asyncapi_document(), option=orjson.OPT_INDENT_2).decode() + "\n"


def main() -> int:
    """Write ``docs/asyncapi.json``."""
    ASYNCAPI_PATH.write_text(render_asyncapi(), encoding="utf-8")
    sys.stderr.write(f"wrote {ASYNCAPI_PATH}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
