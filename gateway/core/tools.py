"""Tool declarations: checking a declared function, and the built-in call control.

A tool's ``parameters`` must be a JSON Schema describing an object; it is checked
with the ``jsonschema`` library against the 2020-12 meta-schema (what both Gemini's
``parametersJsonSchema`` and OpenAI's ``parameters`` accept), so a bad schema is
refused when it is declared, naming the tool, not when the model first calls it.

The call-control tools (``end_call``, ``transfer_call``, ``send_digits``) are one
vocabulary for every platform: the session answers them itself and tells the
adapter (``response.call_control``), which carries them out in its platform's terms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from gateway.core.history import ToolSpec

#: Function names both Gemini and OpenAI accept.
TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
#: The most tools one session may declare.
MAX_TOOLS: Final = 64

END_CALL = ToolSpec(
    name="end_call",
    description=(
        "Hang up the call. Say goodbye first, in the same reply: what you say before "
        "calling this is spoken to the end before the line is closed."
    ),
    parameters={
        "type": "object",
        "properties": {
            "reason": {"type": "string", "description": "Why the call ends (for the logs)."}
        },
    },
    executor="control",
)
TRANSFER_CALL = ToolSpec(
    name="transfer_call",
    description=(
        "Transfer the caller to another number or agent. Tell the caller first, in the same reply."
    ),
    parameters={
        "type": "object",
        "properties": {
            "to": {
                "type": "string",
                "description": "Where to transfer: a phone number in E.164 form, or a SIP URI.",
            }
        },
        "required": ["to"],
    },
    executor="control",
)
SEND_DIGITS = ToolSpec(
    name="send_digits",
    description="Press keys on the phone line (DTMF), e.g. to navigate a phone menu.",
    parameters={
        "type": "object",
        "properties": {
            "digits": {
                "type": "string",
                "pattern": "^[0-9*#wW]+$",
                "description": "The keys to press: 0-9, * and #; w waits half a second.",
            }
        },
        "required": ["digits"],
    },
    executor="control",
)
CONTROL_TOOLS: Final[Mapping[str, ToolSpec]] = {
    tool.name: tool for tool in (END_CALL, TRANSFER_CALL, SEND_DIGITS)
}


class ToolError(ValueError):
    """A tool declaration is invalid; the message names the tool."""


def check_tool(
    name: object, description: object, parameters: object, *, where: str = "tool"
) -> ToolSpec:
    """A checked client tool, or :class:`ToolError` saying what is wrong with it."""
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        shown = repr(name)[:70]
        raise ToolError(
            f"{where} name {shown} is invalid: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or '_'"
        )
    if description is not None and not isinstance(description, str):
        raise ToolError(f"{where} {name!r}: description must be a string")
    schema = {"type": "object", "properties": {}} if parameters is None else parameters
    if not isinstance(schema, dict):
        raise ToolError(f"{where} {name!r}: parameters must be a JSON Schema object")
    check_schema(name, schema, where=where)
    return ToolSpec(name=name, description=description or "", parameters=dict(schema))


def check_schema(name: str, schema: Mapping[str, Any], *, where: str = "tool") -> None:
    """Raise :class:`ToolError` unless ``schema`` is a valid JSON Schema of an object."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.path) or "(root)"
        raise ToolError(
            f"{where} {name!r}: parameters is not a valid JSON Schema at {path}: "
            f"{exc.message[:200]}"
        ) from None
    if schema.get("type", "object") != "object":
        raise ToolError(f"{where} {name!r}: parameters must describe an object (type: object)")


def unique(tools: Iterable[ToolSpec], *, where: str = "tools") -> tuple[ToolSpec, ...]:
    """``tools`` as a tuple; :class:`ToolError` if a name repeats or there are too many."""
    out = tuple(tools)
    seen: set[str] = set()
    for tool in out:
        if tool.name in seen:
            raise ToolError(f"{where}: the tool name {tool.name!r} is declared twice")
        seen.add(tool.name)
    if len(out) > MAX_TOOLS:
        raise ToolError(f"{where}: {len(out)} tools declared; the limit is {MAX_TOOLS}")
    return out
