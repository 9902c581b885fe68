"""Log context and formats: ids that ride along with every line, and JSON lines.

Four context variables hold the ids of what is being served: ``request_id`` and
``route`` (set by :class:`~gateway.metrics.ObservabilityMiddleware` for each HTTP
request and WebSocket), ``session_id`` (bound once a connection has its session)
and ``turn_id`` (bound in the task that generates a turn). asyncio copies the
context into every task it creates, so a session's pipeline and generation tasks
carry the ids of the connection that started them. Lines logged where the
context holds no session or turn (the shell names them in the message as
``session=…`` / ``turn=…``) have them lifted from the message instead.

``GATEWAY_LOG_FORMAT=json`` writes one JSON object per line (``time``, ``level``,
``logger``, ``message`` and the ids, plus ``exc_info`` when there is a traceback),
uvicorn's access log included. The standard library's ``logging`` has no JSON
formatter and the fields are few, so it is written here, on orjson.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import orjson

LogFormat = Literal["text", "json"]

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
route_var: ContextVar[str | None] = ContextVar("route", default=None)
session_id_var: ContextVar[str | None] = ContextVar("session_id", default=None)
turn_id_var: ContextVar[str | None] = ContextVar("turn_id", default=None)

_SESSION_IN_TEXT = re.compile(r"\bsession=([A-Za-z0-9_-]+)")
_TURN_IN_TEXT = re.compile(r"\bturn=([A-Za-z0-9_.:-]+)")


def bind_session(session_id: str) -> None:
    """Every later line of this task (and of the tasks it starts) names the session."""
    session_id_var.set(session_id)


def bind_turn(turn_id: str) -> None:
    """Every later line of this task names the turn (call it in a turn's own task)."""
    turn_id_var.set(turn_id)


def log_ids(message: str) -> dict[str, str | None]:
    """The ids a line carries: from the context, else named in ``message``."""
    session_id = session_id_var.get()
    turn_id = turn_id_var.get()
    if session_id is None and (found := _SESSION_IN_TEXT.search(message)):
        session_id = found.group(1)
    if turn_id is None and (found := _TURN_IN_TEXT.search(message)):
        turn_id = found.group(1)
    return {
        "session_id": session_id,
        "turn_id": turn_id,
        "route": route_var.get(),
        "request_id": request_id_var.get(),
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
            **log_ids(message),
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def make_formatter(fmt: LogFormat, text_format: str) -> logging.Formatter:
    """The formatter for ``GATEWAY_LOG_FORMAT``."""
    return JsonFormatter() if fmt == "json" else logging.Formatter(text_format)


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def describe_store(url: str) -> str:
    """Where ``GATEWAY_STORE`` keeps sessions, for the start-up log: a SQLite
    file's absolute path (relative ones land in the working directory), or the
    URL with its password masked."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite":
        if rest in ("", "/:memory:", ":memory:"):
            return "sqlite in memory (nothing survives a restart)"
        return f"sqlite file {Path(rest[1:]).resolve()}"
    if scheme == "memory":
        return "memory (nothing survives a restart)"
    return safe_url(url)
