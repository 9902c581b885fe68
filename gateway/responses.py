"""The gateway's own JSON error body, ``{"error": {"code", "message"}}``, in one place.

Used by the HTTP API, refused WebSocket upgrades and the Layercode webhook. The
OpenAI-compatible route answers in OpenAI's error shape instead (its own wire
module), since its clients parse that.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse


def problem(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An error response with a stable machine-readable ``code``."""
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )
