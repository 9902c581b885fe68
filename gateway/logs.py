"""Logging set-up: one format, and no secrets in any log line.

uvicorn logs every WebSocket path with its query string, which carries resume
and access tokens; the filter here masks them before any handler sees them.
Transcripts and model text are never passed to a logger in the first place.
"""

from __future__ import annotations

import logging
import re

from gateway.logformat import LogFormat, make_formatter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_SECRET_PARAM = re.compile(
    r"(?i)(\b(?:resume_token|token|access_token|api_key|key|signature)=)[^&\s\"']+"
)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")


def redact(text: str) -> str:
    """``text`` with token-like query parameters and bearer tokens masked."""
    return _BEARER.sub(r"\1***", _SECRET_PARAM.sub(r"\1***", text))


class RedactSecrets(logging.Filter):
    """Masks secrets in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


class DropDenialNoise(logging.Filter):
    """uvicorn's websockets-sansio logs "ASGI callable returned without completing
    handshake." at ERROR after every WebSocket denial response (HTTP 401/403 before
    accept), although the client got its answer (Kludex/uvicorn PR #3138). The
    gateway always accepts or denies, so the record is noise that would page
    someone on every refused token."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


def configure_logging(level: str, fmt: LogFormat = "text") -> None:
    """Log to stderr in one format (text or JSON lines), with secrets masked on every handler."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(make_formatter(fmt, LOG_FORMAT))
    install_redaction()
    logging.getLogger("uvicorn.error").addFilter(DropDenialNoise())


def install_redaction() -> None:
    """Add the redaction filter to every root handler (idempotent)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
