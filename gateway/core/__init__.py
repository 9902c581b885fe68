"""The pure core: session and turn state, chunker, replay log, wire format.

Nothing in this package does I/O or imports asyncio, starlette, an LLM SDK or a
store client; time comes in as an argument. ``tests/core/test_purity.py`` checks it.
"""
