"""Several real gateway processes sharing one real redis-server, for multi-instance tests.

:func:`gateway_instances` starts ``n`` ``python -m gateway`` processes on free ports,
all with ``GATEWAY_STORE`` pointing at the same Redis and short timers (a 1 s
liveness TTL, a short drain), and the offline provider paced so a turn streams for
a while. Tests pick the instance they connect to, so "start on A, resume on B" is
deterministic; no load balancer is needed. :func:`check_view` is what every
client's view of a conversation must satisfy.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.core.events import CONNECTION_EVENTS
from tests.support.process import clean_env, free_port

STOP_TIMEOUT_S = 30

FAST_TIMERS = {
    "GATEWAY_INSTANCE_TTL_S": "1",
    "GATEWAY_DRAIN_S": "3",
    "GATEWAY_RESUME_GRACE_S": "5",
    "GATEWAY_OFFLINE_DELAY_MS": "40",
    "GATEWAY_SWEEP_INTERVAL_S": "1",
}


@dataclass
class Instance:
    """One gateway process of the group."""

    name: str
    port: int
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    paused: bool = False

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def resume_url(self, ready: dict[str, Any], last_seq: int) -> str:
        return (
            f"{self.ws}?session_id={ready['session_id']}"
            f"&resume_token={ready['resume_token']}&last_seq={last_seq}"
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def cont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False


def _start(name: str, env: dict[str, str]) -> Instance:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--port", str(port)],
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    instance = Instance(name, port, proc)
    assert proc.stdout is not None
    for line in proc.stdout:
        instance.lines.append(line)
        if "listening on http" in line or "Uvicorn running on" in line:
            return instance
    proc.wait(timeout=STOP_TIMEOUT_S)
    raise AssertionError(f"gateway {name} exited before serving:\n" + "".join(instance.lines))


def _stop(instance: Instance) -> None:
    """SIGTERM and collect the output; a gateway that does not stop is killed and
    reported, with its log."""
    proc = instance.proc
    if instance.paused:
        instance.cont()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        rest, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
        instance.lines.extend(rest.splitlines(keepends=True))
        raise AssertionError(
            f"gateway {instance.name} did not stop on SIGTERM:\n" + "".join(instance.lines[-40:])
        ) from None
    instance.lines.extend(rest.splitlines(keepends=True))


@contextmanager
def gateway_instances(n: int, redis_url: str, **env: str) -> Iterator[list[Instance]]:
    """``n`` gateways on one Redis, named A, B, C…; stopped (SIGTERM) at the end."""
    settings = {**FAST_TIMERS, "GATEWAY_STORE": redis_url, **env}
    instances: list[Instance] = []
    try:
        for i in range(n):
            instances.append(_start(chr(ord("A") + i), settings))
        yield instances
    finally:
        errors: list[AssertionError] = []
        for instance in instances:
            try:
                _stop(instance)
            except AssertionError as e:
                errors.append(e)
        if errors:
            raise errors[0]


def check_view(events: list[dict[str, Any]]) -> None:
    """A client's view holds: seqs strictly increase with no gap and no repeat, each turn
    has one ``response.start``, chunk indexes 0, 1, 2… and one ``response.end``, and
    nothing of a turn comes after its end."""
    logged = [e for e in events if e["type"] not in CONNECTION_EVENTS]
    seqs = [e["seq"] for e in logged]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    ended: set[str] = set()
    index: dict[str, int] = {}
    for e in logged:
        turn = e.get("turn_id")
        if turn is None or not e["type"].startswith("response."):
            continue  # user.duplicate names a turn that ended long ago
        assert turn not in ended, f"{e['type']} of {turn} after its end"
        if e["type"] == "response.tts":
            assert e["index"] == index.get(turn, 0), (turn, e["index"])
            index[turn] = e["index"] + 1
        elif e["type"] == "response.end":
            ended.add(turn)
