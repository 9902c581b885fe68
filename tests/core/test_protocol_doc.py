"""docs/protocol.md documents every event type, error code and close code."""

from __future__ import annotations

import typing
from pathlib import Path

from gateway.core import events
from gateway.core.codes import CloseCode, ErrorCode
from gateway.core.wire import CLIENT_TYPES

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
