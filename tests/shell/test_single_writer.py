"""One writer per SQLite file: a second gateway process on a file another one
serves stops at start-up, says which file and what to use instead, and the first
one goes on. (That a crash-cut turn is ``failed`` at start-up, before anyone
resumes, is pinned in tests/server/test_durability.py.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.client import Client
from tests.support.faults import FaultyFactory, FaultyProvider, faulty_gateways
from tests.support.process import clean_env, free_port


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[FaultyFactory]:
    with faulty_gateways(tmp_path) as start:
        yield start


async def test_a_second_process_on_the_same_sqlite_file_is_refused_at_start_up(
    gateways: FaultyFactory,
) -> None:
    first = gateways(provider=FaultyProvider())
    async with await Client.connect(f"{first.ws_url}/ws") as client:
        await client.ready()
        await client.send("Before the second process")
        await client.turn()

        second = await _run_second(first.db_path)

        assert second.returncode != 0, "a second writer on one SQLite file was allowed"
        output = second.stdout
        assert str(first.db_path.resolve()) in output, output
        assert "redis" in output.lower(), output
        assert "Uvicorn running on" not in output
        # The first gateway did not notice.
        await client.send("After the second process")
        assert (await client.turn())[-1]["status"] == "completed"
    async with httpx.AsyncClient(base_url=first.http_url) as http:
        assert (await http.get("/ready")).status_code == 200


async def _run_second(db_path: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env(GATEWAY_STORE=f"sqlite:///{db_path}")
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=30,
        check=False,
    )
