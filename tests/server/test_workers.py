"""``voice-gateway --workers N``: several workers on one port, allowed only with Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import children, established, tcp_sockets
from tests.support.client import Client
from tests.support.process import clean_env, free_port, gateway_process

pytestmark = pytest.mark.slow


def test_workers_are_refused_with_sqlite_saying_why(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--workers", "2", "--port", str(free_port())],
        env=clean_env(GATEWAY_STORE=f"sqlite:///{tmp_path / 'g.db'}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers 2 needs a store the workers share" in done.stderr
    assert "GATEWAY_STORE=redis://" in done.stderr


async def test_two_workers_on_redis_share_sessions_and_drain_on_sigterm(redis_url: str) -> None:
    port = free_port()
    env = {"GATEWAY_STORE": redis_url, "GATEWAY_OFFLINE_DELAY_MS": "10", "GATEWAY_DRAIN_S": "5"}
    url = f"ws://127.0.0.1:{port}/ws"
    with gateway_process("--workers", "2", "--port", str(port), **env) as (proc, lines):
        client = await Client.connect(url)
        ready = await client.ready()
        await client.send("Hello")
        await client.turn()
        await client.ws.close()
        last = client.received[-1]["seq"]
        # Resume several times: the kernel hands each connection to either worker.
        for n in range(2, 6):
            resume = f"{url}?session_id={ready['session_id']}&resume_token={ready['resume_token']}"
            async with await Client.connect(f"{resume}&last_seq={last}") as again:
                assert (await again.ready())["resumed"] is True
                await again.send(f"Message {n}")
                end = (await again.turn())[-1]
                assert f"message {n} of our conversation" in end["text"]
                last = again.received[-1]["seq"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    joined = set(re.findall(r"instance (\S+) joined", "".join(lines)))
    assert len(joined) == 2
    assert "all workers stopped (exit [0, 0])" in "".join(lines)


async def test_connections_spread_over_the_workers(redis_url: str) -> None:
    # Each worker listens on its own SO_REUSEPORT socket: one shared socket let the
    # worker that woke first accept a whole burst.
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    with gateway_process("--workers", "2", "--port", str(port), GATEWAY_STORE=redis_url) as (
        proc,
        _,
    ):
        workers: list[int] = []
        for _ in range(200):  # until both workers listen (spawned: they import first)
            workers = children(proc.pid, "spawn_main")
            if len(workers) == 2 and all(
                tcp_sockets(pid, port, state="0A") == 1 for pid in workers
            ):
                break
            await asyncio.sleep(0.1)
        assert len(workers) == 2
        # A burst that waits in the kernel's queues: with one shared socket, the
        # worker that woke first took all of it.
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        connecting = [asyncio.ensure_future(Client.connect(url)) for _ in range(40)]
        await asyncio.sleep(0.5)
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        clients = await asyncio.gather(*connecting)
        try:
            await asyncio.gather(*(client.ready() for client in clients))
            held = [established(pid, port) for pid in workers]
        finally:
            await asyncio.gather(*(client.ws.close() for client in clients))
    assert sum(held) == 40
    assert min(held) >= 8, held  # a fair split is 20 / 20; one shared socket gave 40 / 0
