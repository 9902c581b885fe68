"""Platform adapters: one module per foreign wire protocol, each on its own route.

An adapter is a translator: the platform's conventions at the edge, the same
session engine (history, chunker, providers, store) inside.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from gateway.adapters import layercode, openai_compat, retell, twilio
from gateway.settings import Settings


def adapter_routes(settings: Settings) -> list[BaseRoute]:
    """The routes of every platform adapter."""
    return [
        *twilio.routes(settings),
        *retell.routes(settings),
        *layercode.routes(settings),
        *openai_compat.routes(settings),
    ]
