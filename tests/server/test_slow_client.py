"""A client that stops reading is cut off (4008) without slowing anyone else down."""

from __future__ import annotations

import asyncio
import socket
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import GatewayFactory

RESUME_ATTEMPTS = 50
SENTENCE = "This sentence is one of very many that a client will never read. "


async def chat(url: str, turns: int) -> list[float]:
    """Run ``turns`` turns; the seconds each took on the client's clock."""
    took = []
    async with await Client.connect(url) as client:
        await client.ready()
        for i in range(turns):
            start = time.perf_counter()
            await client.send(f"Question {i}")
            events = await client.turn()
            assert events[-1]["status"] == "completed"
            took.append(time.perf_counter() - start)
    return took


async def test_a_client_that_never_reads_is_closed_and_others_are_unaffected(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_gateway(
        GEMINI_API_KEY="k", GEMINI_BASE_URL=fake_gemini.url, GATEWAY_SEND_QUEUE=16
    )
    url = f"{gateway.ws_url}/ws"
    baseline = await chat(url, 3)

    fake_gemini.reply(SENTENCE * 6000, chunk_size=2000)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (gateway.host, gateway.port))
    slow = await connect(url, sock=sock, max_queue=1)
    await slow.send("Tell me everything")
    # While the slow client's reply backs up, others chat normally.
    others = await asyncio.gather(*(chat(url, 4) for _ in range(3)))

    # Now read what the slow client was sent: it ends with close code 4008.
    slow_client = Client(slow)
    code = await slow_client.close_code()
    assert code == 4008
    ready, *events = slow_client.received
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # With a send queue of 16, a burst of the reply can fill it before the writer sent
    # any of it: then the client had nothing but session.ready, and resumes from 0.
    last = events[-1]["seq"] if events else 0
    resume = (
        f"{url}?session_id={ready['session_id']}&resume_token={ready['resume_token']}"
        f"&last_seq={last}"
    )
    # The reply may still be streaming: with a send queue of 16, one model piece (~30
    # events) can fill the queue even of a client that reads, and the gateway closes
    # that one 4008 too. It resumes again, as a client does.
    for _ in range(RESUME_ATTEMPTS):
        async with await Client.connect(resume) as again:
            try:
                resumed = await again.ready()
                nxt = await again.recv()
                break
            except ConnectionClosed as closed:
                if closed.rcvd is None or closed.rcvd.code != 4008:
                    raise
    else:
        raise AssertionError(f"cut off 4008 on each of {RESUME_ATTEMPTS} resumes")
    assert resumed["resumed"] is True
    # The reply (~6000 events) outgrew the replay log, so the client gets the
    # transcript instead of a replay, never a silent gap.
    assert nxt["type"] == "session.resync"
    assert nxt["transcript"][0] == {"role": "user", "text": "Tell me everything"}

    worst_other = max(max(t) for t in others)
    assert worst_other < max(1.0, 20 * max(baseline)), (baseline, others)
