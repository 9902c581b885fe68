"""Several real gateway processes on one real redis-server: a conversation moves between them.

Each test starts its own instances (tests/support/instances.py): a 1 s liveness
TTL, a 3 s drain, and the offline provider at 40 ms a token, so a turn streams for
a couple of seconds. The client picks the instance it connects to.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.core.events import CONNECTION_EVENTS
from gateway.stores.redis import RedisStore
from tests.support.client import Client
from tests.support.instances import check_view, gateway_instances
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

LONG = "Tell me a long story about the sea, the wind and the lighthouse keeper"


def logged(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] not in CONNECTION_EVENTS]


async def stored_events(redis_url: str, session_id: str) -> list[dict[str, Any]]:
    import orjson

    store = RedisStore(redis_url)
    await store.open()
    try:
        return [orjson.loads(e.data) for e in await store.read_events(session_id, 0)]
    finally:
        await store.aclose()


async def owner_of(redis_url: str, session_id: str) -> str:
    store = RedisStore(redis_url)
    await store.open()
    try:
        raw = await store.client.hget(f"vg:{{{session_id}}}:m", "owner")
        return (raw or b"").decode()
    finally:
        await store.aclose()


async def test_resume_on_another_instance_mid_turn_gets_the_rest_once(redis_url: str) -> None:
    with gateway_instances(2, redis_url) as (a, b):
        first = await Client.connect(a.ws)
        ready = await first.ready()
        await first.send(LONG)
        await first.recv_type("response.tts")
        await first.ws.close()  # the client drops mid-turn
        seen = logged(first.received)

        second = await Client.connect(b.resume_url(ready, seen[-1]["seq"]))
        again = await second.ready()
        first_relayed = await second.recv_type("response.tts")
        relayed_at = time.monotonic()
        rest = first_relayed + await second.turn()
        ended_at = time.monotonic()
        assert again["resumed"] is True
        assert ended_at - relayed_at > 0.3  # streamed live from A, not all at its end
        view = seen + logged(second.received)
        check_view(view)
        assert rest[-1]["status"] == "completed"
        stored = await stored_events(redis_url, ready["session_id"])
        assert view == stored  # the client saw exactly what the store holds

        await second.send("And then?")
        nxt = await second.turn()
        assert nxt[-1]["status"] == "completed"
        assert "message 2 of our conversation" in nxt[-1]["text"]
        check_view(logged(first.received) + logged(second.received))
        assert f"-{b.proc.pid}-" in await owner_of(redis_url, ready["session_id"])
        await second.ws.close()
    assert "handing it over" in "".join(a.lines)
    assert "relayed from its owner" in "".join(b.lines)
    assert "taken over by this instance" in "".join(b.lines)


async def test_a_killed_owner_ends_the_cut_turn_failed_and_the_talk_goes_on(
    redis_url: str,
) -> None:
    with gateway_instances(2, redis_url) as (a, b):
        first = await Client.connect(a.ws)
        ready = await first.ready()
        await first.send(LONG)
        await first.recv_type("response.tts")
        a.kill()
        killed_at = time.monotonic()
        seen = logged(first.received)

        second = await Client.connect(b.resume_url(ready, seen[-1]["seq"]))
        await second.ready()
        end = (await second.turn())[-1]
        took = time.monotonic() - killed_at
        assert end["status"] == "failed"
        assert end["reason"]
        assert took < 1.0 + 2.0  # the 1 s liveness TTL, and slack for a busy machine
        check_view(seen + logged(second.received))

        await second.send("Are you still there?")
        nxt = await second.turn()
        assert nxt[-1]["status"] == "completed"
        assert "message 2 of our conversation" in nxt[-1]["text"]
        await second.ws.close()


async def test_the_owner_dies_while_the_client_waits_on_another_instance(
    redis_url: str,
) -> None:
    with gateway_instances(2, redis_url, GATEWAY_OFFLINE_DELAY_MS="150") as (a, b):
        first = await Client.connect(a.ws)
        ready = await first.ready()
        await first.send(LONG)
        await first.recv_type("response.tts")
        await first.ws.close()
        seen = logged(first.received)

        second = await Client.connect(b.resume_url(ready, seen[-1]["seq"]))
        waiting = asyncio.ensure_future(second.ready())
        await asyncio.sleep(0.3)  # B is waiting for A to hand the session over
        a.kill()
        await waiting
        end = (await second.turn())[-1]
        assert end["status"] == "failed"
        check_view(seen + logged(second.received))
        await second.ws.close()


async def test_a_paused_owner_is_fenced_and_its_client_taken_over(redis_url: str) -> None:
    with gateway_instances(2, redis_url) as (a, b):
        first = await Client.connect(a.ws)
        ready = await first.ready()
        await first.send(LONG)
        await first.recv_type("response.tts")
        a.pause()
        paused_seen = logged(first.received)

        second = await Client.connect(b.resume_url(ready, paused_seen[-1]["seq"]))
        await second.ready()
        end = (await second.turn())[-1]
        assert end["status"] == "failed"  # A looked dead: the cut turn ended on B
        a.cont()
        code = await first.close_code()
        assert code == 4409
        # Whatever A's socket got after the pause was stored before, never after B took over.
        stored = await stored_events(redis_url, ready["session_id"])
        by_seq = {e["seq"]: e for e in stored}
        for event in logged(first.received):
            assert by_seq.get(event["seq"]) == event
        check_view(logged(first.received)[: len(paused_seen)] + logged(second.received))
        await second.send("Hello again")
        assert (await second.turn())[-1]["status"] == "completed"
        await second.ws.close()
    assert "taken over by another instance" in "".join(a.lines)


async def test_takeover_across_instances_closes_the_older_socket(redis_url: str) -> None:
    with gateway_instances(2, redis_url) as (a, b):
        first = await Client.connect(a.ws)
        ready = await first.ready()
        await first.send(LONG)
        await first.recv_type("response.tts")
        last = logged(first.received)[-1]["seq"]

        second = await Client.connect(b.resume_url(ready, last))
        started = time.monotonic()
        assert await first.close_code() == 4409
        assert time.monotonic() - started < 1.5
        await second.ready()
        end = (await second.turn())[-1]
        assert end["status"] == "completed"
        stored = await stored_events(redis_url, ready["session_id"])
        assert logged(first.received) == stored[: len(logged(first.received))]
        check_view(logged(first.received)[:last] + logged(second.received))
        await second.ws.close()


async def test_message_ids_are_idempotent_across_instances(redis_url: str) -> None:
    with gateway_instances(2, redis_url) as (a, b):
        first = await Client.connect(a.ws)
        ready = await first.ready()
        await first.send({"type": "user.message", "text": "Hi there", "id": "u1"})
        await first.turn()
        last = logged(first.received)[-1]["seq"]
        await first.ws.close()

        second = await Client.connect(b.resume_url(ready, last))
        await second.ready()
        await second.send({"type": "user.message", "text": "Hi there", "id": "u1"})
        dup = await second.recv_type("user.duplicate")
        assert dup[-1]["id"] == "u1"
        await second.ws.close()


async def test_delete_from_a_third_instance_ends_the_session_where_it_is(
    redis_url: str,
) -> None:
    with gateway_instances(3, redis_url) as (a, b, c):
        client = await Client.connect(a.ws)
        ready = await client.ready()
        async with httpx.AsyncClient(base_url=c.http) as http:
            listed = await http.get(f"/sessions/{ready['session_id']}")
            assert listed.status_code == 200
            gone = await http.delete(f"/sessions/{ready['session_id']}")
            assert gone.status_code in (200, 204)
        ended = await client.recv_type("session.ended")
        assert ended[-1]["type"] == "session.ended"
        assert await client.close_code() == 1000
        async with httpx.AsyncClient(base_url=b.http) as http:
            assert (await http.get(f"/sessions/{ready['session_id']}")).status_code == 404


async def test_input_on_the_relaying_instance_reaches_the_owner(redis_url: str) -> None:
    with gateway_instances(2, redis_url) as (a, b):
        first = await Client.connect(a.ws)
        ready = await first.ready()
        await first.send({"type": "user.message", "text": LONG, "id": "u1"})
        await first.recv_type("response.tts")
        await first.ws.close()
        seen = logged(first.received)

        second = await Client.connect(b.resume_url(ready, seen[-1]["seq"]))
        await second.ready()
        await second.recv_type("response.tts")  # relayed from A
        await second.send({"type": "user.message", "text": "Stop, a new question", "id": "u2"})
        superseded = await second.turn()
        assert superseded[-1]["status"] == "superseded"
        nxt = await second.turn()
        assert nxt[0]["type"] == "response.start"
        assert nxt[0]["in_reply_to"] == "u2"
        assert nxt[-1]["status"] == "completed"
        check_view(seen + logged(second.received))
        starts = [e for e in logged(second.received) if e["type"] == "response.start"]
        assert [e["in_reply_to"] for e in starts] == ["u2"]  # exactly one turn for u2
        await second.ws.close()


async def test_sigterm_drain_hands_the_session_over_without_a_ttl_wait(redis_url: str) -> None:
    # A 5 s liveness TTL: a hand-over that had to wait for it would show.
    with gateway_instances(2, redis_url, GATEWAY_INSTANCE_TTL_S="5") as (a, b):
        first = await Client.connect(a.ws)
        ready = await first.ready()
        await first.send(LONG)
        await first.recv_type("response.tts")
        a.proc.send_signal(signal.SIGTERM)
        notice = await first.recv_type("session.reconnect")
        await first.ws.close()
        seen = logged(first.received)

        second = await Client.connect(b.resume_url(ready, seen[-1]["seq"]))
        await second.ready()
        end = (await second.turn())[-1]
        assert end["status"] == "completed"  # A finished the turn while draining
        ended_at = time.monotonic()
        await second.send("Next question")
        await second.recv_type("response.start")
        assert time.monotonic() - ended_at < 3.0  # released: no 5 s liveness wait
        nxt = await second.turn()
        assert nxt[-1]["status"] == "completed"
        assert a.proc.wait(timeout=30) == 0
        check_view(seen + logged(second.received))
        assert notice[-1]["type"] == "session.reconnect"
        await second.ws.close()


async def test_the_grace_window_holds_for_a_client_relayed_by_another_instance(
    redis_url: str,
) -> None:
    slow = {"GATEWAY_OFFLINE_DELAY_MS": "120", "GATEWAY_RESUME_GRACE_S": "1"}
    with gateway_instances(3, redis_url, **slow) as (a, b, c):
        first = await Client.connect(a.ws)
        ready = await first.ready()
        await first.send(LONG)
        await first.recv_type("response.tts")
        await first.ws.close()

        second = await Client.connect(b.resume_url(ready, logged(first.received)[-1]["seq"]))
        await second.ready()
        await asyncio.sleep(1.5)  # longer than the grace window: the relayed client counts
        more = await second.recv_type("response.tts")
        assert more[-1]["turn_id"] == "t1"
        await second.ws.close()  # now it goes for good
        last = logged(second.received)[-1]["seq"]
        await asyncio.sleep(2.5)  # the grace window runs out on A

        third = await Client.connect(c.resume_url(ready, last))
        await third.ready()
        end = (await third.turn())[-1]
        assert (end["turn_id"], end["status"]) == ("t1", "interrupted")
        check_view(logged(first.received) + logged(second.received) + logged(third.received))
        await third.ws.close()


async def test_a_redis_restart_mid_turn_loses_nothing_the_client_got(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()  # AOF everysec
    try:
        with gateway_instances(1, server.url, GATEWAY_STORE_RETRY_S="15") as (a,):
            client = await Client.connect(a.ws)
            ready = await client.ready()
            await client.send(LONG)
            await client.recv_type("response.tts")
            server.kill()
            await asyncio.sleep(0.3)
            server.start()
            end = (await client.turn())[-1]
            assert end["status"] == "completed"
            await client.send("Still there?")
            assert (await client.turn())[-1]["status"] == "completed"
            check_view(client.received)
            stored = await stored_events(server.url, ready["session_id"])
            assert logged(client.received) == stored
            await client.ws.close()
    finally:
        server.stop()


async def test_an_owner_killed_with_no_client_around_is_recovered_by_the_sweeper(
    redis_url: str,
) -> None:
    with gateway_instances(2, redis_url) as (a, b):
        client = await Client.connect(a.ws)
        ready = await client.ready()
        await client.send(LONG)
        await client.recv_type("response.tts")
        a.kill()
        async with httpx.AsyncClient(base_url=b.http) as http:
            for _ in range(100):  # the 1 s TTL, then a 1 s sweep on B
                await asyncio.sleep(0.1)
                got = (await http.get(f"/sessions/{ready['session_id']}")).json()
                if got["turns"] and got["turns"][-1]["status"] == "failed":
                    break
            assert got["turns"][-1]["status"] == "failed"
