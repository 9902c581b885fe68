"""Fuzz request heads and WebSocket upgrades through a real server (issue 14, item 7).

Every request, however malformed or incomplete, gets an answer that is not a
server error (or a close when it is not HTTP at all) within the header timeout; nothing is
logged at ERROR; and ``/health`` still answers afterwards.
"""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app, uvicorn_options
from gateway.settings import Settings
from tests.support.raw import status_of
from tests.support.servers import running

PATHS = ["/ws", "/twilio", "/retell/call_1", "/retell/s/call_1", "/sessions", "/health", "/"]
header_names = st.sampled_from(
    [
        "Host",
        "Origin",
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
        "Authorization",
        "Cookie",
        "Content-Length",
        "Transfer-Encoding",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "Expect",
    ]
) | st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)
header_values = st.one_of(
    st.sampled_from(
        [
            "websocket",
            "Upgrade",
            "upgrade, keep-alive",
            "13",
            "8",
            base64.b64encode(b"0123456789abcdef").decode(),
            "not-base64",
            "bearer.x",
            "http://127.0.0.1",
            "https://evil.example",
            "null",
            "127.0.0.1",
            "rebind.evil.com:80",
            "[::1]",
            "-1",
            "99999999999999999999",
            "chunked",
            "100-continue",
            "permessage-deflate; client_max_window_bits",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60),
    st.integers(min_value=0, max_value=20_000).map(lambda n: "v" * n),
)


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "DELETE", "OPTIONS", "GET", "PRI", "G ET"]))
    path = draw(st.sampled_from(PATHS) | st.from_regex(r"/[ -~]{0,40}", fullmatch=True))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/x"]))
    lines = [f"{method} {path} {version}"]
    if draw(st.booleans()):
        lines += [
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(b'fuzzfuzzfuzzfuzz').decode()}",
            "Sec-WebSocket-Version: 13",
        ]
    for name, value in draw(st.lists(st.tuples(header_names, header_values), max_size=8)):
        lines.append(f"{name}: {value}")
    ending = draw(st.sampled_from(["\r\n\r\n", "\r\n\r\n", "\n\n", "\r\n"]))
    return ("\r\n".join(lines) + ending).encode("latin-1")


def answer(port: int, head: bytes, wait_s: float) -> bytes | None:
    """The first line of the answer (``b""`` if the server closed without one), or
    ``None`` if the server neither answered nor closed within ``wait_s``."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(head)
        received = b""
        try:
            while b"\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            return None
        except ConnectionResetError:
            pass
        return received


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    handler = _Errors()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "gateway")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.mark.slow
def test_fuzzed_request_heads_and_upgrades(tmp_path: Path) -> None:
    config = Settings(  # type: ignore[call-arg]
        _env_file=None,
        GATEWAY_STORE=f"sqlite:///{tmp_path / 'fuzz.db'}",
        GATEWAY_HEADER_TIMEOUT_S=0.5,
        GATEWAY_OFFLINE_DELAY_MS=0,
    )
    with (
        running(create_app(config), **uvicorn_options(config)) as server,
        errors_logged() as errors,
    ):

        @settings(
            max_examples=120,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(head=request_heads())
        def check(head: bytes) -> None:
            response = answer(server.port, head, wait_s=5)
            assert response is not None, ("no answer and no close", head[:200])
            status = status_of(response)
            assert status is None or status < 500 or status == 503, (head[:200], response[:200])
            if status is None:
                assert response == b"", (head[:200], response[:200])

        check()
        health = answer(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 5)
        assert health is not None
        assert status_of(health) == 200
    assert not errors, [r.getMessage() for r in errors][:5]
