"""What the telemetry costs: turns through a real server with and without it.

The same run as gateway_bench.py (offline provider with no delay, memory store),
once with the app as built (metrics, request-id middleware, the measured store
and provider, tracing off as by default) and once with those taken out, printed
side by side; then once with tracing on, exporting to a local OTLP/HTTP sink that
runs in its own process (so that it does not compete for this one's GIL).

    .venv/bin/python bench/telemetry_bench.py [--sessions 1 20] [--turns 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import gateway.app as app_module
from bench.gateway_bench import measure, p99
from gateway.app import create_app, uvicorn_options
from gateway.settings import Settings
from tests.support.servers import running

SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


MODES = ("without", "with", "tracing")


def bare(inner: Any, *_: Any) -> Any:
    return inner


def build(mode: str, settings: Settings) -> Any:
    if mode != "without":
        return create_app(settings)
    saved = app_module.InstrumentedStore, app_module.InstrumentedProvider
    app_module.InstrumentedStore = bare  # type: ignore[assignment,misc]
    app_module.InstrumentedProvider = bare  # type: ignore[assignment,misc]
    try:
        app = create_app(settings)
    finally:
        app_module.InstrumentedStore, app_module.InstrumentedProvider = saved
    app.user_middleware = [m for m in app.user_middleware if "Observability" not in repr(m.cls)]
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.turns} turns per session, memory store, best of {args.rounds} rounds")
    print(
        f"{'telemetry':10} {'sessions':>8} {'turn ms':>8} {'p99':>7} {'events/s':>9} {'ratio':>7}"
    )
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        with ExitStack() as stack:
            assert sink.stdout is not None
            sink_url = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
            servers = {}
            for mode in MODES:
                env: dict[str, Any] = {
                    "GATEWAY_STORE": "memory://",
                    "GATEWAY_OFFLINE_DELAY_MS": 0,
                    "GATEWAY_RATE_PER_S": 1000,
                    "GATEWAY_RATE_BURST": 1000,
                }
                if mode == "tracing":
                    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink_url
                settings = Settings(_env_file=None, **env)
                servers[mode] = stack.enter_context(
                    running(build(mode, settings), **uvicorn_options(settings))
                )
                asyncio.run(measure(f"{servers[mode].ws_url}/ws", 1, 3))  # warm up
            for sessions in args.sessions:
                best: dict[str, tuple[float, list[float], float]] = {}
                for _ in range(args.rounds):  # interleaved, so that load on the machine hits all
                    for mode in MODES:
                        url = f"{servers[mode].ws_url}/ws"
                        took, _, events, elapsed = asyncio.run(measure(url, sessions, args.turns))
                        mean = statistics.mean(took)
                        if mode not in best or mean < best[mode][0]:
                            best[mode] = (mean, took, events / elapsed)
                for mode in MODES:
                    mean, took, rate = best[mode]
                    ratio = mean / best["without"][0]
                    print(
                        f"{mode:10} {sessions:>8} {mean:>8.2f} {p99(took):>7.2f} {rate:>9.0f} "
                        f"{ratio:>6.2f}x"
                    )
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
