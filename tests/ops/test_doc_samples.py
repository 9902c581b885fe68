"""The samples in the docs point at routes the gateway serves."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from starlette.routing import Match, Mount

from gateway.app import create_app
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HOST = "your-host.example.com"


def xml_samples() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in re.findall(r"```xml\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            found.append((str(path.relative_to(ROOT)), block))
    return found


def test_there_are_twiml_samples() -> None:
    names = {name for name, _ in xml_samples()}
    assert {"README.md", "docs/adapters/twilio.md"} <= names


@pytest.mark.parametrize(("name", "sample"), xml_samples())
def test_every_url_in_a_twiml_sample_is_answered(name: str, sample: str) -> None:
    app = create_app(Settings(_env_file=None, GATEWAY_STORE="memory://"))
    urls = [
        (element.tag, attribute, value)
        for element in ET.fromstring(
            sample.strip().removeprefix('<?xml version="1.0" encoding="UTF-8"?>').strip()
        ).iter()
        for attribute, value in element.attrib.items()
        if HOST in value
    ]
    assert urls, f"{name}: no gateway URL in the sample"
    for tag, attribute, url in urls:
        parts = urlsplit(url)
        kind = "websocket" if parts.scheme == "wss" else "http"
        scope = {"type": kind, "path": parts.path, "method": "POST"}
        matches = [r.matches(scope)[0] for r in app.routes if not isinstance(r, Mount)]
        assert Match.FULL in matches, f"{name}: <{tag} {attribute}={url!r}> is not a route"
