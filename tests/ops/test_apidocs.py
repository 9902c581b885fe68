"""/openapi.json validates and matches what the HTTP API answers; the AsyncAPI
document in docs/ is generated from the wire models and matches the frames the
gateway sends, so neither can drift."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import orjson
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from gateway.adapters import retell_wire, twilio_wire
from gateway.apidocs import (
    ASYNCAPI_PATH,
    ApiError,
    Health,
    Ready,
    SessionCreated,
    SessionDetail,
    SessionPage,
    StatusView,
    openapi_document,
    render_asyncapi,
    server_event_types,
)
from gateway.app import create_app
from gateway.settings import Settings
from tests.support.client import Client
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

#: HTML pages and the document itself, which need no schema.
UNDOCUMENTED = {"/status", "/api-docs", "/openapi.json"}


def schema_validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator({**document, "$ref": f"#/components/schemas/{name}"})


def check(document: dict[str, Any], name: str, instance: Any) -> None:
    errors = [e.message for e in schema_validator(document, name).iter_errors(instance)]
    assert errors == [], f"{name}: {errors}"


async def test_openapi_is_valid_and_every_answer_matches_it(
    offline_gateway: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=offline_gateway.http_url) as http:
        document = (await http.get("/openapi.json")).json()
        validate(document)
        assert document["openapi"] == "3.1.0"
        async with await Client.connect(f"{offline_gateway.ws_url}/ws") as client:
            ready = await client.ready()
            await client.send("Hello")
            await client.turn()
        answers = {
            "SessionCreated": (await http.post("/sessions"), 201, SessionCreated),
            "SessionPage": (await http.get("/sessions?limit=1"), 200, SessionPage),
            "SessionDetail": (
                await http.get(f"/sessions/{ready['session_id']}"),
                200,
                SessionDetail,
            ),
            "Health": (await http.get("/health"), 200, Health),
            "Ready": (await http.get("/ready"), 200, Ready),
            "StatusView": (await http.get("/status.json"), 200, StatusView),
            "ApiError": (await http.get("/sessions/s_nope"), 404, ApiError),
        }
        bad_limit = await http.get("/sessions?limit=0")
    for name, (response, status, model) in answers.items():
        assert response.status_code == status, name
        model.model_validate(response.json())  # strict: an extra or missing field fails
        check(document, name, response.json())
    detail = answers["SessionDetail"][0].json()
    assert detail["turns"][0]["status"] == "completed"
    assert bad_limit.status_code == 400
    check(document, "ApiError", bad_limit.json())
    assert "200" in document["paths"]["/sessions"]["get"]["responses"]


def test_every_http_route_is_in_the_openapi_document() -> None:
    app = create_app(Settings(_env_file=None, GATEWAY_STORE="memory://"))
    paths = openapi_document()["paths"]
    for route in app.routes:
        if isinstance(route, Route) and route.path not in UNDOCUMENTED:
            assert route.path in paths, f"{route.path} is not in /openapi.json"
            for method in route.methods or ():
                if method != "HEAD":
                    assert method.lower() in paths[route.path], f"{method} {route.path}"
        assert not isinstance(route, Mount) or route.path == ""


def test_the_asyncapi_document_is_generated_from_the_wire_models() -> None:
    assert ASYNCAPI_PATH.read_text(encoding="utf-8") == render_asyncapi(), (
        "docs/asyncapi.json is stale: run python -m gateway.apidocs"
    )
    document = orjson.loads(ASYNCAPI_PATH.read_bytes())
    assert document["asyncapi"] == "3.0.0"
    native = document["channels"]["native"]["messages"]
    for cls in server_event_types():
        assert cls.__name__ in native, f"{cls.__name__} is not on /ws in the AsyncAPI document"
    refs = re.findall(r'"\$ref":\s*"#/([^"]+)"', ASYNCAPI_PATH.read_text(encoding="utf-8"))
    for ref in refs:
        node: Any = document
        for part in ref.split("/"):
            assert part in node, f"dangling $ref #/{ref}"
            node = node[part]


def _by_type(document: dict[str, Any]) -> dict[str, str]:
    """Server event type -> its schema's name."""
    return {cls.__dataclass_fields__["type"].default: cls.__name__ for cls in server_event_types()}


async def test_what_ws_clients_and_the_gateway_send_matches_the_asyncapi_document(
    start_gateway: GatewayFactory,
) -> None:
    document = orjson.loads(ASYNCAPI_PATH.read_bytes())
    names = _by_type(document)
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0)
    sent = [
        {"type": "user.message", "text": "Hello", "id": "u1"},
        {"type": "ping", "id": 7},
        {"type": "session.update", "language": "es"},
        {"type": "user.message", "text": "Hello", "id": "u1"},
        {"type": "response.create", "instructions": "greet"},
        {"type": "interrupt", "heard_text": "Hi"},
        {"type": "playback.ack", "turn_id": "t1", "index": 0},
        {"type": "dance"},
        {"type": "session.end"},
    ]
    received: list[dict[str, Any]] = []
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        received.append(await client.ready())
        await client.send(sent[0])
        received += await client.turn()
        for frame in sent[1:]:
            await client.send(frame)
        received += await client.recv_until(lambda e: e["type"] == "session.ended")
    for frame in sent[:-2]:
        check(document, "ClientEvent", frame)
    assert not schema_validator(document, "ClientEvent").is_valid({"type": "dance"})
    seen = set()
    for event in received:
        check(document, names[event["type"]], event)
        seen.add(event["type"])
    assert {"session.ready", "response.start", "response.tts", "response.end", "pong"} <= seen
    assert {"session.updated", "user.duplicate", "error", "session.ended"} <= seen


def test_platform_frames_match_the_asyncapi_document() -> None:
    document = orjson.loads(ASYNCAPI_PATH.read_bytes())
    check(document, "TwilioText", orjson.loads(twilio_wire.text_frame("Hi.", last=False)))
    check(document, "TwilioEnd", orjson.loads(twilio_wire.end_frame({"reason": "done"})))
    check(document, "RetellConfig", orjson.loads(retell_wire.config_frame()))
    check(document, "RetellPingPong", orjson.loads(retell_wire.ping_pong_frame(1700000000)))
    check(
        document,
        "RetellResponse",
        orjson.loads(retell_wire.response_frame(3, "Hello.", complete=True)),
    )
    prompt = {"type": "prompt", "voicePrompt": "Hello", "lang": "en-US", "last": True}
    check(document, "TwilioInbound", prompt)
    twilio_wire.INBOUND.validate_python(prompt)
    ping = {"interaction_type": "ping_pong", "timestamp": 1}
    check(document, "RetellInbound", ping)
    retell_wire.INBOUND.validate_python(ping)


def test_the_docs_link_the_documents() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert "docs/asyncapi.json" in readme
    assert "/openapi.json" in readme
