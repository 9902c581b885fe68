"""Adapter stub: replaced by the real retell adapter."""

from __future__ import annotations

from starlette.routing import BaseRoute

from gateway.settings import Settings


def routes(settings: Settings) -> list[BaseRoute]:
    """No routes yet."""
    return []
