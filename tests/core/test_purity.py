"""The core does no I/O: it imports no asyncio, web framework, SDK or store client."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.core

FORBIDDEN = {
    "asyncio",
    "starlette",
    "uvicorn",
    "websockets",
    "google",
    "httpx",
    "redis",
    "sqlite3",
    "socket",
    "logging",
    "time",
    "threading",
    "os",
}


def test_core_modules_import_nothing_that_does_io() -> None:
    core = Path(gateway.core.__file__).parent
    offenders = []
    for path in sorted(core.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert len(list(core.glob("*.py"))) >= 8
    assert offenders == []
