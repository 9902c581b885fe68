"""voice-gateway: a realtime WebSocket gateway between people who talk and an LLM."""

__version__ = "0.1.0"
