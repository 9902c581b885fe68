"""docs/protocol.md documents every event type, error code and close code."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import orjson

from gateway.core import events
from gateway.core.codes import CloseCode, ErrorCode
from gateway.core.wire import CLIENT_TYPES
from tests.support.client import Client
from tests.support.gateway import GatewayFactory

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")


def test_every_error_code_is_documented() -> None:
    assert [c.value for c in ErrorCode if f"| `{c.value}` |" not in DOC] == []


def test_every_close_code_is_documented() -> None:
    assert [c.value for c in CloseCode if f"| {c.value} |" not in DOC] == []


def test_every_event_type_is_documented() -> None:
    server_types = [
        typing.get_args(cls.__dataclass_fields__["type"].type)[0]
        if not isinstance(cls.__dataclass_fields__["type"].type, str)
        else cls.__dataclass_fields__["type"].default
        for cls in typing.get_args(events.ServerEvent)
    ]
    missing = [t for t in (*CLIENT_TYPES, *server_types) if f"| `{t}` |" not in DOC]
    assert missing == []


# --- the examples are true ------------------------------------------------------

#: Values that differ on every run; the doc's are kept when comparing.
_VARYING = ("session_id", "resume_token")


def _transcripts() -> list[list[tuple[str, str]]]:
    """Each ```console block that talks to /ws, as (direction, line) pairs."""
    blocks = re.findall(r"```console\n(.*?)```", DOC, flags=re.S)
    return [
        [(line[0], line[2:]) for line in block.splitlines() if line[:2] in ("> ", "< ")]
        for block in blocks
        if "wscat -c" in block
    ]


def _normalized(actual: dict[str, object], documented: dict[str, object]) -> dict[str, object]:
    shown = dict(actual)
    for key in _VARYING:
        if key in shown and key in documented:
            shown[key] = documented[key]
    if "latency" in shown and "latency" in documented:
        shown["latency"] = documented["latency"]  # timings vary; their keys are compared below
        assert set(actual["latency"]) == set(documented["latency"])  # type: ignore[arg-type]
    return shown


def test_the_protocol_doc_has_a_session_transcript() -> None:
    assert _transcripts(), "docs/protocol.md lost its wscat session"


async def test_every_wscat_example_is_what_the_gateway_answers(
    start_gateway: GatewayFactory,
) -> None:
    """Each line the doc shows the gateway sending is, field for field and in
    order, what a real offline gateway sends for the lines the doc sends."""
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_STORE="memory://")
    for transcript in _transcripts():
        async with await Client.connect(f"{gateway.ws_url}/ws") as client:
            for direction, line in transcript:
                if direction == ">":
                    await client.send(line if not line.startswith("{") else orjson.loads(line))
                    continue
                documented = orjson.loads(line.replace("…", ""))
                actual = await client.recv()
                assert list(actual) == list(documented), f"fields differ for {line}"
                assert _normalized(actual, documented) == documented
            assert await client.close_code() == 1000
