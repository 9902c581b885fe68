"""A bounded chaos run: 3 instances on one Redis, clients dropping and resuming on random
instances, one instance SIGKILLed and one Redis restart; every client's view is
checked against the store.

Each client asks its questions one after the other (each with an id, resent after
a drop if its turn never started), drops its socket at random moments, and resumes
on a random live instance. Whatever happens, its view must be the store's log:
seqs from 1 with no gap and no repeat, every event equal to the stored one, every
turn ended exactly once.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.core.events import CONNECTION_EVENTS
from gateway.stores.redis import RedisStore
from tests.support.client import Client
from tests.support.instances import Instance, check_view, gateway_instances
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

CLIENTS = 3
QUESTIONS = 6
RUN_LIMIT_S = 90


class Talker:
    """One client: its session, everything it received, and where it stands."""

    def __init__(self, name: str, rng: random.Random, alive: list[Instance]) -> None:
        self.name = name
        self.rng = rng
        self.alive = alive
        self.events: list[dict[str, Any]] = []
        self.ready: dict[str, Any] | None = None
        self.client: Client | None = None

    @property
    def last_seq(self) -> int:
        logged = [e for e in self.events if e["type"] not in CONNECTION_EVENTS]
        return logged[-1]["seq"] if logged else 0

    async def connect(self) -> None:
        """(Re)connect to a random live instance, retrying through outages."""
        for _ in range(60):
            instance = self.rng.choice(self.alive)
            url = (
                instance.ws
                if self.ready is None
                else instance.resume_url(self.ready, self.last_seq)
            )
            try:
                client = await Client.connect(url)
                first = await client.recv()
            except (OSError, ConnectionClosed, InvalidStatus, TimeoutError):
                await asyncio.sleep(0.3)
                continue
            if first["type"] != "session.ready":
                await client.ws.close()
                await asyncio.sleep(0.3)
                continue
            self.ready = self.ready or first
            self.client = client
            return
        raise AssertionError(f"{self.name} could not reconnect")

    async def drop(self) -> None:
        if self.client is not None:
            await self.client.ws.close()
            self.client = None

    async def recv(self) -> dict[str, Any] | None:
        """The next event, or ``None`` if the connection ended (then reconnect)."""
        assert self.client is not None
        try:
            event = await self.client.recv()
        except (ConnectionClosed, TimeoutError):
            self.client = None
            return None
        self.events.append(event)
        return event

    async def ask(self, n: int) -> str:
        """Ask question ``n`` until its turn ends; returns the turn's status."""
        msg_id = f"{self.name}-q{n}"
        started: str | None = None
        drop_after = self.rng.randint(1, 8)
        while True:
            if self.client is None:
                await self.connect()
            if started is None:
                await self._send({"type": "user.message", "text": f"Question {n}", "id": msg_id})
            seen = 0
            while self.client is not None:
                event = await self.recv()
                if event is None:
                    break
                if event.get("in_reply_to") == msg_id and event["type"] == "response.start":
                    started = event["turn_id"]
                if event["type"] == "user.duplicate" and event.get("id") == msg_id:
                    started = started or event["turn_id"]
                if event["type"] == "response.end" and event["turn_id"] == started:
                    return str(event["status"])
                seen += 1
                if seen == drop_after and self.rng.random() < 0.5:
                    await self.drop()
            drop_after = self.rng.randint(1, 8)

    async def _send(self, frame: dict[str, Any]) -> None:
        assert self.client is not None
        try:
            await self.client.send(frame)
        except ConnectionClosed:
            self.client = None


async def _chaos(alive: list[Instance], server: RedisServer) -> None:
    await asyncio.sleep(2.0)
    victim = alive.pop(0)
    victim.kill()
    await asyncio.sleep(3.0)
    server.kill()
    await asyncio.sleep(0.3)
    server.start()


async def _stored(url: str, session_id: str) -> list[dict[str, Any]]:
    store = RedisStore(url)
    await store.open()
    try:
        return [orjson.loads(e.data) for e in await store.read_events(session_id, 0)]
    finally:
        await store.aclose()


async def test_chaos_every_view_is_the_store(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    timers = {"GATEWAY_OFFLINE_DELAY_MS": "25", "GATEWAY_STORE_RETRY_S": "20"}
    try:
        with gateway_instances(3, server.url, **timers) as instances:
            alive = list(instances)
            talkers = [Talker(f"c{i}", random.Random(i), alive) for i in range(CLIENTS)]

            async def play(talker: Talker) -> list[str]:
                await talker.connect()
                statuses = [await talker.ask(n) for n in range(QUESTIONS)]
                await talker.drop()
                return statuses

            async with asyncio.timeout(RUN_LIMIT_S):
                chaos = asyncio.create_task(_chaos(alive, server))
                results = await asyncio.gather(*(play(t) for t in talkers))
                assert chaos.done(), "the conversations ended before the kill and the restart"
                await chaos

            for talker, statuses in zip(talkers, results, strict=True):
                assert talker.ready is not None
                assert set(statuses) <= {"completed", "failed", "interrupted"}, statuses
                view = [e for e in talker.events if e["type"] not in CONNECTION_EVENTS]
                check_view(view)
                stored = await _stored(server.url, talker.ready["session_id"])
                assert view == stored[: len(view)], talker.name
                assert view[0]["seq"] == 1
    finally:
        server.stop()
