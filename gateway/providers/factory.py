"""Which provider serves the gateway: the registry, and building one from settings.

Each provider lives in its own module of this package, which defines
``from_settings(settings) -> LLMProvider``. Modules are imported only when their
provider is chosen, so an SDK that is not used is never loaded. Adding a provider
is its module (with its tests), its settings fields, and one line in
:data:`PROVIDERS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol

from gateway.providers.base import LLMProvider

if TYPE_CHECKING:
    from gateway.settings import Settings

#: ``GATEWAY_PROVIDER`` names and the module that implements each.
PROVIDERS: Final[Mapping[str, str]] = {
    "gemini": "gateway.providers.gemini",
    "openai": "gateway.providers.openai",
    "offline": "gateway.providers.offline",
}


class _ProviderModule(Protocol):
    def from_settings(self, settings: Settings) -> LLMProvider: ...


def build_provider(settings: Settings) -> LLMProvider:
    """The provider the settings choose (see ``Settings.provider_name``)."""
    name = settings.provider_name
    module: _ProviderModule = importlib.import_module(PROVIDERS[name])
    return module.from_settings(settings)
