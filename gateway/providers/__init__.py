"""LLM providers: one module per API, all behind :class:`gateway.providers.base.LLMProvider`."""
