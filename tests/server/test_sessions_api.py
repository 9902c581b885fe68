"""The session HTTP API over a real server."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.client import Client
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer


async def test_create_then_connect_then_read_the_transcript(
    start_gateway: GatewayFactory,
) -> None:
    offline_gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=30)
    async with httpx.AsyncClient(base_url=offline_gateway.http_url) as http:
        created = await http.post("/sessions")
        assert created.status_code == 201
        body = created.json()
        async with await Client.connect(offline_gateway.ws_url + body["ws_path"]) as client:
            ready = await client.ready()
            await client.send({"type": "user.message", "text": "Hello", "id": "u1"})
            await client.turn()
            await client.send({"type": "user.message", "text": "Again", "id": "u2"})
            await client.recv_type("response.start")
            await client.send({"type": "interrupt"})
            await client.turn()
        session = (await http.get(f"/sessions/{body['session_id']}")).json()
    assert ready["session_id"] == body["session_id"]
    assert ready["resumed"] is True
    first, second = session["turns"]
    assert (first["turn_id"], first["status"], first["user_text"], first["in_reply_to"]) == (
        "t1",
        "completed",
        "Hello",
        "u1",
    )
    assert first["text"].startswith('You said: "Hello"')
    assert first["latency"]["total_ms"] >= first["latency"]["first_chunk_ms"] >= 0
    assert first["ended_at"] >= first["started_at"]
    assert (second["status"], second["reason"]) == ("interrupted", "interrupted by the client")


async def test_list_sessions_newest_first_in_pages(offline_gateway: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=offline_gateway.http_url) as http:
        ids = [(await http.post("/sessions")).json()["session_id"] for _ in range(5)]
        listed: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await http.get("/sessions", params=params)).json()
            pages += 1
            listed += [s["session_id"] for s in page["sessions"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert pages == 3
    assert listed == list(reversed(ids))


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": 0}, "invalid_limit"),
        ({"limit": "x"}, "invalid_limit"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
    ],
)
async def test_bad_list_parameters_are_a_400(
    offline_gateway: RunningServer, params: dict[str, object], code: str
) -> None:
    async with httpx.AsyncClient(base_url=offline_gateway.http_url) as http:
        response = await http.get("/sessions", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


async def test_delete_ends_a_live_session_and_forgets_it(offline_gateway: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=offline_gateway.http_url) as http:
        client = await Client.connect(f"{offline_gateway.ws_url}/ws")
        ready = await client.ready()
        sid = ready["session_id"]
        assert (await http.get("/sessions")).json()["sessions"][0]["live"] is True
        assert (await http.delete(f"/sessions/{sid}")).status_code == 204
        ended = await client.recv()
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert (await http.get(f"/sessions/{sid}")).status_code == 404
        assert (await http.delete(f"/sessions/{sid}")).status_code == 404
    assert (ended["type"], ended["reason"]) == ("session.ended", "the session was deleted")
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1000
    url = f"{offline_gateway.ws_url}/ws?session_id={sid}&resume_token={ready['resume_token']}"
    gone = await Client.connect(url)
    with pytest.raises(ConnectionClosed) as refused:
        await gone.recv()
    assert refused.value.rcvd is not None
    assert refused.value.rcvd.code == 4404


async def test_health_and_ready(offline_gateway: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=offline_gateway.http_url) as http:
        health = await http.get("/health")
        ready = await http.get("/ready")
    assert health.json()["status"] == "ok"
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
