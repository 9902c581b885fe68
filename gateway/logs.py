"""Logging set-up: one format, and no secrets in any log line.

uvicorn logs every request and WebSocket path with its query string, which
carries resume and access tokens, and Retell's path carries its secret
(``/retell/<secret>/<call>``). :func:`redact` masks them, and
:class:`RedactSecrets` applies it to a record's message and arguments before any
handler formats it, so it works with whatever formatter a handler uses.

A query parameter is a credential by its *decoded* name: starlette reads
``?%74oken=`` as ``token``, so it is masked as ``token`` is. Transcripts and
model text are never passed to a logger in the first place.
"""

from __future__ import annotations

import logging
import re
from typing import Final
from urllib.parse import unquote_plus

from gateway.logformat import LogFormat, make_formatter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Query parameter names (decoded, case-insensitive) whose values are masked.
SECRET_PARAMS: Final = frozenset(
    {
        "token",
        "resume_token",
        "access_token",
        "id_token",
        "refresh_token",
        "api_key",
        "apikey",
        "key",
        "signature",
        "sig",
        "secret",
        "password",
        "auth",
        "authorization",
        "jwt",
    }
)
MASK: Final = "***"

_PARAM = re.compile(r"(?P<lead>^|[?&;\s\"'(])(?P<name>[^=&\s\"'?#]{1,64})=(?P<value>[^&\s\"'#]*)")
_BEARER = re.compile(r"(?i)(bearer[\s.]+)[A-Za-z0-9._~+/=%-]+")
_RETELL_SECRET_PATH = re.compile(r"(/retell/)[^/\s?\"'#]+(?=/[^/\s?\"'#]+)")


def _mask_param(match: re.Match[str]) -> str:
    name = match["name"]
    if unquote_plus(name).strip().lower() not in SECRET_PARAMS or not match["value"]:
        return match[0]
    return f"{match['lead']}{name}={MASK}"


def redact(text: str) -> str:
    """``text`` with credential query parameters (however percent-encoded), bearer
    tokens and Retell's path secret masked."""
    if "=" in text:
        text = _PARAM.sub(_mask_param, text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(rf"\1{MASK}", text)
    if "/retell/" in text:
        text = _RETELL_SECRET_PATH.sub(rf"\1{MASK}", text)
    return text


class RedactSecrets(logging.Filter):
    """Masks secrets in a record's message, arguments and traceback text, before
    any formatter (plain, JSON or other) sees the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(_TRACEBACKS.formatException(record.exc_info))
        return True


_TRACEBACKS = logging.Formatter()


def configure_logging(level: str, fmt: LogFormat = "text") -> None:
    """Log to stderr in one format (text or JSON lines), with secrets masked on every handler."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(make_formatter(fmt, LOG_FORMAT))
    install_redaction()


def install_redaction() -> None:
    """Add the redaction filter to every root handler (idempotent): call it again
    after adding a handler, whatever its formatter."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
