"""Shared pytest configuration: plugins that provide fixtures to every test."""

pytest_plugins = [
    "tests.support.fake_gemini",
    "tests.support.fake_openai",
    "tests.support.gateway",
    "tests.support.redis_server",
    "tests.support.webhooks",
]
