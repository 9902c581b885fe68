"""A Prometheus scrape sees a conversation: sessions, connections, turns,
latencies, failures, store commits, resumes, closes and refusals."""

from __future__ import annotations

import asyncio
import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import GatewayFactory
from tests.support.servers import RunningServer

METRICS_KEY = "metrics-key-0123456789"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str):
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def scrape(gateway: RunningServer, **headers: str):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{gateway.http_url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_a_conversation_is_counted(
    gemini_gateway: RunningServer, fake_gemini: FakeGemini
) -> None:
    before = await scrape(gemini_gateway)
    assert value(before, "gateway_live_sessions") == 0
    fake_gemini.reply("One. Two. Three.")
    fake_gemini.fail(400)
    async with await Client.connect(f"{gemini_gateway.ws_url}/ws") as client:
        ready = await client.ready()
        await client.send("hello")
        first = await client.turn()
        await client.send("again")
        failed = await client.turn("t2")
        during = await scrape(gemini_gateway)
    assert first[-1]["status"] == "completed"
    assert failed[-1]["status"] == "failed"
    assert value(during, "gateway_live_sessions") == 1
    assert value(during, "gateway_connections", route="/ws") == 1
    assert value(during, "gateway_turns_total", route="/ws", status="completed") == 1
    assert value(during, "gateway_turns_total", route="/ws", status="failed") == 1
    assert value(during, "gateway_turn_first_chunk_seconds_count", route="/ws") == 1
    assert value(during, "gateway_turn_duration_seconds_count", route="/ws") == 2
    total_ms = first[-1]["latency"]["total_ms"]
    observed = value(during, "gateway_turn_duration_seconds_sum", route="/ws")
    assert observed >= total_ms / 1000
    assert value(during, "gateway_provider_errors_total", detail="bad_request") == 1
    assert value(during, "gateway_provider_calls_total", outcome="ok") == 1
    assert value(during, "gateway_provider_calls_total", outcome="bad_request") == 1
    assert value(during, "gateway_store_commit_seconds_count") >= 4

    url = (
        f"{gemini_gateway.ws_url}/ws?session_id={ready['session_id']}"
        f"&resume_token={ready['resume_token']}&last_seq=1"
    )
    async with await Client.connect(url) as again:
        assert (await again.ready())["resumed"] is True
    after = await scrape(gemini_gateway)
    assert value(after, "gateway_resumes_total") == 1
    assert value(after, "gateway_resyncs_total") == 0
    assert value(after, "gateway_connections", route="/ws") == 0
    assert value(after, "gateway_connections_opened_total", route="/ws") == 2
    assert value(after, "gateway_http_requests_total", route="/metrics", method="GET", status="200")


async def test_rate_limit_refusals_are_counted(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_RATE_PER_S="1", GATEWAY_RATE_BURST="2")
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        await client.ready()
        for _ in range(4):
            await client.send({"type": "ping"})
        await client.recv_until(lambda e: e.get("code") == "rate_limited")
    scraped = await scrape(gateway)
    assert value(scraped, "gateway_rate_limited_total", route="/ws") == 1


async def test_metrics_can_require_a_key(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_METRICS_KEY=METRICS_KEY)
    async with httpx.AsyncClient() as http:
        refused = await http.get(f"{gateway.http_url}/metrics")
        wrong = await http.get(
            f"{gateway.http_url}/metrics", headers={"Authorization": "Bearer nope"}
        )
    assert refused.status_code == 401
    assert wrong.status_code == 401
    assert "gateway_live_sessions" not in refused.text
    scraped = await scrape(gateway, Authorization=f"Bearer {METRICS_KEY}")
    assert value(scraped, "gateway_live_sessions") == 0


async def test_a_resync_is_counted(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0, GATEWAY_REPLAY_EVENTS=16)
    async with await Client.connect(f"{gateway.ws_url}/ws") as client:
        ready = await client.ready()
        for i in range(4):
            await client.send(f"Message {i}")
            await client.turn()
    url = (
        f"{gateway.ws_url}/ws?session_id={ready['session_id']}"
        f"&resume_token={ready['resume_token']}&last_seq=1"
    )
    async with await Client.connect(url) as again:
        await again.ready()
        assert (await again.recv())["type"] == "session.resync"
    scraped = await scrape(gateway)
    assert value(scraped, "gateway_resumes_total") == 1
    assert value(scraped, "gateway_resyncs_total") == 1


async def test_a_client_that_never_reads_is_a_slow_client_close(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_gateway(
        GEMINI_API_KEY="k", GEMINI_BASE_URL=fake_gemini.url, GATEWAY_SEND_QUEUE=16
    )
    fake_gemini.reply("This sentence is one a client will never read. " * 6000, chunk_size=2000)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (gateway.host, gateway.port))
    slow = await connect(f"{gateway.ws_url}/ws", sock=sock, max_queue=1)
    await slow.send("Tell me everything")
    assert await Client(slow).close_code() == 4008
    scraped = await scrape(gateway)
    assert value(scraped, "gateway_slow_client_closes_total", route="/ws") == 1
    assert value(scraped, "gateway_websocket_closes_total", route="/ws", code="4008") == 1
    assert value(scraped, "gateway_send_queue_depth_bucket", le="16.0") == value(
        scraped, "gateway_send_queue_depth_count"
    )
    assert value(scraped, "gateway_send_queue_depth_bucket", le="8.0") < value(
        scraped, "gateway_send_queue_depth_count"
    ), "the queue filled up before the close"


async def test_an_openai_compatible_turn_is_counted(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(GATEWAY_OFFLINE_DELAY_MS=0)
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        answer = await http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "Hello"}]},
        )
    assert answer.status_code == 200
    after = await scrape(gateway)
    assert (
        value(after, "gateway_turns_total", route="/v1/chat/completions", status="completed") == 1
    )
