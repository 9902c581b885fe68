"""``GATEWAY_TOOLS_FILE``: server tools declared in JSON or YAML.

::

    allow_private_addresses: false   # true only for webhooks on your own network
    tools:
      - name: get_weather
        description: The current weather in a city.
        parameters: {type: object, properties: {city: {type: string}}, required: [city]}
        url: https://tools.example.com/weather
        headers: {X-Api-Key: "..."}    # optional
        timeout_s: 5                   # optional, default 10

A mistake is a :class:`~gateway.errors.SettingsError` naming the file and the tool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from gateway.core.history import ToolSpec
from gateway.core.tools import CONTROL_TOOLS, ToolError, check_tool, unique
from gateway.errors import SettingsError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Tool(_Model):
    name: StrictStr
    description: StrictStr = ""
    parameters: dict[str, Any] | None = None
    url: Annotated[StrictStr, Field(pattern=r"^https?://\S+$")]
    headers: dict[StrictStr, StrictStr] = {}
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


class _File(_Model):
    allow_private_addresses: bool = False
    tools: list[_Tool] = []


@dataclass(frozen=True, slots=True)
class WebhookTool:
    """A server tool: its declaration and where to POST its calls."""

    spec: ToolSpec
    url: str
    headers: tuple[tuple[str, str], ...]
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ToolsFile:
    """What ``GATEWAY_TOOLS_FILE`` declares."""

    tools: tuple[WebhookTool, ...] = ()
    allow_private_addresses: bool = False

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(tool.spec for tool in self.tools)


def load_tools_file(path: Path) -> ToolsFile:
    """Read and check ``path`` (``.json``, or YAML otherwise)."""
    where = f"GATEWAY_TOOLS_FILE {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SettingsError(
            f"{where}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"
        ) from None
    return parse_tools(data, where=where)


def parse_tools(data: object, *, where: str = "GATEWAY_TOOLS_FILE") -> ToolsFile:
    """Check the decoded file."""
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: must be an object with a 'tools' list")
    raw_tools = data.get("tools")
    if isinstance(raw_tools, list):
        for index, raw in enumerate(raw_tools):
            name = raw.get("name") if isinstance(raw, dict) else None
            label = f"tools[{index}]" + (f" ({name!r})" if isinstance(name, str) else "")
            try:
                _Tool.model_validate(raw)
            except ValidationError as exc:
                err = exc.errors(include_url=False, include_input=False)[0]
                field = ".".join(str(p) for p in err["loc"]) or "(tool)"
                raise SettingsError(f"{where}: {label}: {field}: {err['msg']}") from None
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        raise SettingsError(f"{where}: {field}: {err['msg']}") from None
    tools: list[WebhookTool] = []
    try:
        for index, tool in enumerate(parsed.tools):
            if tool.name in CONTROL_TOOLS:
                raise ToolError(
                    f"tools[{index}] {tool.name!r} is a built-in call-control tool: "
                    "enable it with GATEWAY_CALL_CONTROL instead"
                )
            spec = check_tool(tool.name, tool.description, tool.parameters, where=f"tools[{index}]")
            tools.append(
                WebhookTool(
                    spec=ToolSpec(spec.name, spec.description, spec.parameters, "server"),
                    url=tool.url,
                    headers=tuple(tool.headers.items()),
                    timeout_s=tool.timeout_s,
                )
            )
        unique((t.spec for t in tools), where="tools")
    except ToolError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    return ToolsFile(tuple(tools), parsed.allow_private_addresses)
