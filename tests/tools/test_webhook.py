"""Server tools: the tools file and the signed webhook runner against a real local
HTTP server."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.core.history import FunctionCall
from gateway.errors import SettingsError
from gateway.settings import load_settings
from gateway.tools.file import ToolsFile, load_tools_file, parse_tools
from gateway.tools.webhook import WebhookRunner, is_public
from tests.support.webhooks import WebhookServer

SECRET = "tools-secret-for-tests"
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def tools(server: WebhookServer, path: str = "/weather", **extra: Any) -> ToolsFile:
    tool = {"name": "get_weather", "parameters": CITY, "url": server.url(path), **extra}
    return parse_tools({"allow_private_addresses": True, "tools": [tool]})


async def run(file: ToolsFile, arguments: dict[str, Any]) -> Any:
    runner = WebhookRunner(file, secret=SECRET, clock=lambda: 1_700_000_000.0)
    try:
        call = FunctionCall("call_1", "get_weather", orjson.dumps(arguments).decode())
        return orjson.loads(await runner.run(call))
    finally:
        await runner.aclose()


async def test_a_call_is_posted_signed_and_its_json_answer_is_the_result(
    webhooks: WebhookServer,
) -> None:
    assert await run(tools(webhooks, headers={"X-Api-Key": "k1"}), {"city": "Paris"}) == {
        "temp_c": 21,
        "sky": "sunny",
    }
    (hook,) = webhooks.received()
    assert hook.body == {"city": "Paris"}
    assert hook.headers["x-gateway-tool"] == "get_weather"
    assert hook.headers["x-gateway-call-id"] == "call_1"
    assert hook.headers["x-api-key"] == "k1"
    stamp = hook.headers["x-gateway-timestamp"]
    assert stamp == "1700000000"
    # The receiver's check, written from the documented recipe.
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + hook.raw, hashlib.sha256)
    assert hook.headers["x-gateway-signature"] == "sha256=" + expected.hexdigest()


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/broken", "HTTP 500"),
        ("/text", "did not answer JSON"),
        ("/redirect", "HTTP 302"),
        ("/slow", "within 0.3 s"),
    ],
)
async def test_failures_become_error_results_for_the_model(
    webhooks: WebhookServer, path: str, words: str
) -> None:
    result = await run(tools(webhooks, path, timeout_s=0.3), {"city": "Paris"})
    assert words in result["error"]


async def test_loopback_and_private_addresses_are_refused_unless_the_file_allows_them(
    webhooks: WebhookServer,
) -> None:
    tool = {"name": "get_weather", "parameters": CITY, "url": webhooks.url("/weather")}
    result = await run(parse_tools({"tools": [tool]}), {"city": "Paris"})
    assert "private or loopback" in result["error"]
    assert webhooks.received() == []
    for address in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:127.0.0.1"):
        assert not is_public(address)
    assert is_public("8.8.8.8")


def test_a_bad_schema_in_the_file_is_an_error_naming_the_tool(tmp_path: Path) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(
        "tools:\n"
        "  - name: get_weather\n"
        "    url: https://tools.example.com/weather\n"
        "    parameters: {type: object, properties: {city: {type: 12}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(SettingsError, match=r"tools\[0\] 'get_weather'.*JSON Schema"):
        load_tools_file(path)
    with pytest.raises(SettingsError, match=r"GATEWAY_TOOLS_FILE .*get_weather"):
        load_settings(GATEWAY_TOOLS_FILE=str(path))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"tools": [{"name": "f", "url": "ftp://x"}]}, "tools[0] ('f'): url"),
        ({"tools": [{"name": "f", "url": "https://x", "colour": 1}]}, "colour"),
        ({"tools": [{"name": "end_call", "url": "https://x"}]}, "GATEWAY_CALL_CONTROL"),
        (
            {"tools": [{"name": "f", "url": "https://x"}, {"name": "f", "url": "https://y"}]},
            "twice",
        ),
        ([1, 2], "object"),
    ],
)
def test_file_mistakes_are_clear(data: Any, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_tools(data)
    assert words in str(caught.value)


def test_json_and_yaml_files_load(tmp_path: Path) -> None:
    json_file = tmp_path / "tools.json"
    json_file.write_text(
        orjson.dumps({"tools": [{"name": "f", "url": "https://x.example/f"}]}).decode()
    )
    (tool,) = load_tools_file(json_file).tools
    assert (tool.spec.name, tool.spec.executor, tool.timeout_s) == ("f", "server", 10.0)
    assert load_settings(GATEWAY_CALL_CONTROL="end_call, send_digits").control_tools()[1].name == (
        "send_digits"
    )
    with pytest.raises(SettingsError, match="GATEWAY_CALL_CONTROL"):
        load_settings(GATEWAY_CALL_CONTROL="hang_up")


async def test_the_request_goes_to_the_checked_address_not_a_second_lookup(
    webhooks: WebhookServer,
) -> None:
    """DNS rebinding: the host is resolved once, checked, and that address is
    dialled, with the tool's own host in ``Host``. ``weather.test`` exists in no
    DNS, so an answer at all proves the checked address was used."""
    port = webhooks.server.port
    looked_up: list[tuple[str, int]] = []

    async def resolver(host: str, port_: int) -> list[str]:
        looked_up.append((host, port_))
        return ["127.0.0.1"]

    tool = {"name": "get_weather", "parameters": CITY, "url": f"http://weather.test:{port}/weather"}
    runner = WebhookRunner(
        parse_tools({"tools": [tool]}), secret=None, resolver=resolver, public=lambda a: True
    )
    try:
        call = FunctionCall("call_1", "get_weather", '{"city": "Oslo"}')
        assert orjson.loads(await runner.run(call)) == {"temp_c": -3, "sky": "snow"}
    finally:
        await runner.aclose()
    assert looked_up == [("weather.test", port)]
    (hook,) = webhooks.received()
    assert hook.headers["host"] == f"weather.test:{port}"
    refused = WebhookRunner(parse_tools({"tools": [tool]}), secret=None, resolver=resolver)
    try:
        assert "127.0.0.1" in orjson.loads(await refused.run(call))["error"]
    finally:
        await refused.aclose()
