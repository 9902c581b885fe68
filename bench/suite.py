"""The benchmark suite: what a session costs and what limits one gateway process.

One command runs everything and prints markdown tables:

    .venv/bin/python bench/suite.py [--quick]

Three servers are measured in the same run, each on the same core (the first one
this process may use), while the load client, the stall probe and the fake model share
the other:

- **model**: the paced fake Gemini alone (bench/fake_model.py: 50 tokens/s, first piece
  after 300 ms by default), talked to directly: the latency nobody can beat;
- **relay**: the raw-relay baseline (bench/relay.py: WebSocket in, httpx2 stream, one
  frame per model piece, no chunker, no store);
- **gateway**: the real ``python -m gateway`` with the real google-genai SDK pointed at
  the fake, a SQLite store in a temporary directory and log level ``warning``.

Sections: a concurrent-sessions sweep (time to first chunk p50/p95/p99, gaps between
chunks, turns/s, CPU-ms per turn and per token from ``/proc``, RSS, and an event-loop
stall probe: a separate process pinging over its own session every 20 ms); a
conversation-length sweep (CPU per turn at turn 1 against turn L, on an unpaced model);
idle-session memory; time to first chunk per route; and the issue's targets, each as
a ratio to its baseline with pass or fail. Timing is only ever printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.fake_model import Pace
from bench.load import (
    Conversation,
    LayercodeConversation,
    LoadResult,
    ModelConversation,
    NativeConversation,
    OpenAIConversation,
    RetellConversation,
    TurnSample,
    TwilioConversation,
    http_client,
    run_load,
)
from bench.procs import (
    ROOT,
    Proc,
    children,
    cores,
    cpu_s_of,
    established,
    free_port,
    pin_self,
    redis_server,
    rss_kb_of,
    started,
)

#: Environment prefixes the gateway under test must not inherit from the shell.
_FOREIGN = ("GEMINI_", "GATEWAY_", "GOOGLE_", "TWILIO_", "RETELL_", "LAYERCODE_", "OPENAI_")
#: Limits opened up so that the gateway, not its guard, is what is measured.
_OPEN_LIMITS = {
    "GATEWAY_RATE_PER_S": "1000",
    "GATEWAY_RATE_BURST": "1000",
    "GATEWAY_MAX_CONNECTIONS": "100000",
    "GATEWAY_MAX_SOCKETS": "100000",  # still capped by the descriptor limit
    "GATEWAY_MAX_CONNECTIONS_PER_PRINCIPAL": "100000",
    "GATEWAY_MAX_SESSIONS_PER_PRINCIPAL": "1000000",
    "GATEWAY_FIRST_TOKEN_TIMEOUT_S": "300",
    "GATEWAY_TOKEN_TIMEOUT_S": "300",
    "GEMINI_TIMEOUT_S": "300",
}
FAST_MODEL = "bench-t0-f0"
#: The workers section's pace: twice as fast, so that a few hundred sessions offer more
#: turns than two workers serve (a slower model needs more sessions, and a worker's
#: CPU per turn grows with the turns it streams at once).
WORKERS_MODEL = "bench-t100-f150"
SECTIONS = ("sweep", "length", "idle", "routes", "workers")
#: Settings that make every route cut whole sentences (the baseline of the routes table).
SENTENCE_EVERYWHERE = (
    "TWILIO_CHUNKING",
    "RETELL_CHUNKING",
    "LAYERCODE_CHUNKING",
    "OPENAI_COMPAT_CHUNKING",
)
#: Each route's default chunk mode (gateway/settings.py).
ROUTE_MODES = {
    "/ws": "sentence",
    "/twilio": "word",
    "/retell": "word",
    "/v1/chat/completions": "word",
    "/layercode/agent": "word",
}


# --- statistics ---------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank); NaN when there are no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def fmt(value: float, digits: int = 0) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


@dataclass
class Point:
    """One server at one load."""

    server: str
    sessions: int
    result: LoadResult
    tokens_per_turn: int
    cpu_s: float = math.nan
    rss_kb: float = math.nan
    rtts: list[float] = field(default_factory=list)
    #: CPU seconds of the other processes measured beside the server, by name.
    others_cpu_s: dict[str, float] = field(default_factory=dict)
    #: What ``census`` counted once every session was open (sessions per worker).
    census: list[int] = field(default_factory=list)

    @property
    def turns(self) -> int:
        return len(self.result.samples)

    def firsts(self) -> list[float]:
        return [s.first_chunk_ms for s in self.result.samples if s.first_chunk_ms is not None]

    def gaps(self) -> list[float]:
        return [g for s in self.result.samples for g in s.gaps_ms]

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.result.elapsed_s if self.result.elapsed_s else math.nan

    @property
    def cpu_ms_per_turn(self) -> float:
        return self.cpu_s * 1000 / self.turns if self.turns else math.nan

    @property
    def cpu_ms_per_token(self) -> float:
        return self.cpu_ms_per_turn / self.tokens_per_turn

    @property
    def stall_ms(self) -> float:
        """The probe's worst round trip."""
        return max(self.rtts) if self.rtts else math.nan


# --- the servers --------------------------------------------------------------------------


class Measured(Protocol):
    """Something whose CPU and memory ``/proc`` can tell: a :class:`Proc`, a :class:`Pid`,
    a :class:`Workers`."""

    def cpu_s(self) -> float: ...

    def rss_kb(self) -> float: ...


@dataclass(frozen=True)
class Pid:
    """One process by its id (a worker, or this load client)."""

    pid: int

    def cpu_s(self) -> float:
        return cpu_s_of(self.pid)

    def rss_kb(self) -> float:
        return rss_kb_of(self.pid)


@dataclass(frozen=True)
class Workers:
    """A gateway started with ``--workers N``: its supervisor and the N worker processes.
    With one worker there is no supervisor: the process is the worker."""

    proc: Proc
    pids: tuple[int, ...]

    def cpu_s(self) -> float:
        """CPU of the supervisor and every worker: a worker's CPU is its own process's
        (the supervisor's ``/proc`` counts a child only once it has been reaped)."""
        own = (self.proc.pid,) if self.pids != (self.proc.pid,) else ()
        return sum(cpu_s_of(pid) for pid in (*own, *self.pids))

    def rss_kb(self) -> float:
        return float(sum(rss_kb_of(pid) for pid in self.pids))

    def sessions(self) -> list[int]:
        """Client connections each worker holds now."""
        return [established(pid, self.proc.port) for pid in self.pids]


def gateway_env(model_url: str, model: str, tmp: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN) and k != "PORT"}
    env.update(_OPEN_LIMITS)
    env.update(
        GEMINI_API_KEY="bench-key-not-secret",
        GEMINI_BASE_URL=model_url,
        GEMINI_MODEL=model,
        GATEWAY_INSTRUCTIONS="You are a helpful voice assistant. Answer in two sentences.",
        GATEWAY_STORE=f"sqlite:///{tmp / f'sessions-{port}.db'}",
        GATEWAY_PORT=str(port),
        GATEWAY_LOG_LEVEL="warning",
    )
    return env


@contextlib.contextmanager
def gateway(
    model_url: str,
    model: str,
    tmp: Path,
    core: int | set[int] | None,
    *,
    argv: Sequence[str] = (),
    **extra: str,
) -> Iterator[Proc]:
    with ExitStack() as stack:
        for attempt in range(3):
            # The port is free when picked but could be taken before the gateway binds it.
            port = free_port()
            env = {**gateway_env(model_url, model, tmp, port), **extra}
            log = tmp / f"gateway-{port}.log"
            try:
                proc = stack.enter_context(
                    started(["-m", "gateway", *argv], core=core, env=env, port=port, log=log)
                )
            except RuntimeError:
                if attempt == 2:
                    raise
                continue
            break
        yield proc


@contextlib.contextmanager
def relay(model_url: str, model: str, core: int | None) -> Iterator[Proc]:
    args = ["bench/relay.py", "--model-url", model_url, "--model", model]
    with started(args, core=core) as proc:
        yield proc


async def _probe(url: str, client_core: int | None) -> asyncio.subprocess.Process:
    def pin() -> None:
        if client_core is not None:
            os.sched_setaffinity(0, {client_core})

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "load.py"),
        "probe",
        url,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=pin,
    )
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if line.strip() != b"READY":
        raise RuntimeError("the stall probe did not start")
    return proc


async def _probe_result(proc: asyncio.subprocess.Process) -> list[float]:
    proc.terminate()
    out, _ = await proc.communicate()
    return [float(x) for x in orjson.loads(out.strip().splitlines()[-1])]


async def measure(
    name: str,
    make: Callable[[], Conversation],
    sessions: int,
    turns: int,
    tokens: int,
    *,
    proc: Measured | None = None,
    probe_url: str | None = None,
    client_core: int | None = None,
    think_s: float = 0.0,
    spread_s: float = 1.0,
    others: Mapping[str, Measured] | None = None,
    census: Callable[[], list[int]] | None = None,
) -> Point:
    """Run a load and read the server's CPU, memory and loop stalls around it (and the
    CPU of ``others``; ``census()`` runs once every session is open)."""
    point = Point(name, sessions, LoadResult([], 0.0, 0), tokens)
    state: dict[str, object] = {}
    others = others or {}
    others_before: dict[str, float] = {}

    async def ready() -> None:
        if census is not None:
            point.census = census()
        if probe_url is not None:
            state["probe"] = await _probe(probe_url, client_core)
        others_before.update((k, m.cpu_s()) for k, m in others.items())
        if proc is not None:
            state["cpu"] = proc.cpu_s()

    async def done() -> None:
        if proc is not None:
            point.cpu_s = proc.cpu_s() - float(state["cpu"])  # type: ignore[arg-type]
            point.rss_kb = proc.rss_kb()
        point.others_cpu_s = {k: m.cpu_s() - others_before[k] for k, m in others.items()}
        if "probe" in state:
            point.rtts = await _probe_result(state["probe"])  # type: ignore[arg-type]

    point.result = await run_load(
        make, sessions, turns, think_s=think_s, spread_s=spread_s, on_ready=ready, on_done=done
    )
    return point


# --- sections -----------------------------------------------------------------------------


def _md(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def turns_for(sessions: int, budget: int, most: int) -> int:
    """Turns per session so that a point has about ``budget`` turns (at least 2)."""
    return max(2, min(most, math.ceil(budget / sessions)))


async def sweep(
    args: argparse.Namespace,
    model: Proc,
    relay_proc: Proc,
    gw: Proc,
    client_core: int | None,
) -> list[Point]:
    points: list[Point] = []
    tokens = args.reply_tokens
    relay_url = f"ws://127.0.0.1:{relay_proc.port}/ws"
    gw_url = f"ws://127.0.0.1:{gw.port}/ws"
    model_http = http_client(f"http://127.0.0.1:{model.port}")
    rows = []
    try:
        for n in args.sessions:
            turns = args.turns or turns_for(n, args.turn_budget, 6 if args.quick else 20)
            common = {"think_s": args.think_s, "client_core": client_core}
            trio = [
                await measure(
                    "model",
                    lambda: ModelConversation(model_http, "bench"),
                    n,
                    turns,
                    tokens,
                    **common,
                ),
                await measure(
                    "relay",
                    lambda: NativeConversation(relay_url),
                    n,
                    turns,
                    tokens,
                    proc=relay_proc,
                    probe_url=relay_url,
                    **common,
                ),
                await measure(
                    "gateway",
                    lambda: NativeConversation(gw_url),
                    n,
                    turns,
                    tokens,
                    proc=gw,
                    probe_url=gw_url,
                    **common,
                ),
            ]
            for p in trio:
                firsts, gaps = p.firsts(), p.gaps()
                rows.append(
                    [
                        str(n),
                        p.server,
                        str(p.turns),
                        fmt(pct(firsts, 50)),
                        fmt(pct(firsts, 95)),
                        fmt(pct(firsts, 99)),
                        fmt(pct(gaps, 50)),
                        fmt(pct(gaps, 99)),
                        fmt(p.turns_per_s, 1),
                        fmt(p.cpu_ms_per_turn, 1),
                        fmt(p.cpu_ms_per_token, 2),
                        fmt(p.rss_kb / 1024, 0),
                        fmt(pct(p.rtts, 99), 1),
                        fmt(p.stall_ms, 1),
                        str(p.result.errors),
                    ]
                )
            points += trio
            _say(f"  … {n} session(s) done")
    finally:
        await model_http.aclose()
    _say()
    _say(
        f"### Concurrent sessions ({args.reply_tokens}-token replies at "
        f"{args.tokens_per_s:g} tokens/s, first piece after {args.first_ms:g} ms; "
        f"think time {args.think_s:g} s)"
    )
    _say()
    _say(
        _md(
            [
                "N",
                "server",
                "turns",
                "1st chunk p50 ms",
                "p95",
                "p99",
                "gap p50 ms",
                "gap p99",
                "turns/s",
                "CPU ms/turn",
                "CPU ms/token",
                "RSS MB",
                "probe p99 ms",
                "stall max ms",
                "errors",
            ],
            rows,
        )
    )
    base = [p for p in points if p.server == "model" and p.sessions == min(args.sessions)]
    if base:
        own = pct(base[0].firsts(), 50)
        bound = [
            str(p.sessions)
            for p in points
            if p.server == "model" and pct(p.firsts(), 50) > 1.2 * own + 20
        ]
        if bound:
            _say()
            _say(
                f"At N = {', '.join(bound)} the fake model alone, on the client's core, is "
                "already slower than at the lowest N: those rows measure the load client's "
                "core as much as the servers."
            )
    return points


@dataclass
class LengthResult:
    server: str
    #: The median turn of a fresh session's first turns, run alternately with the
    #: long session's last ones (so that both see the same machine).
    cpu_first_ms: float
    cpu_last_ms: float
    first_chunk_first: float
    first_chunk_last: float
    turns: int = 0
    #: The median of the long session's own first turns, minutes earlier.
    cpu_start_ms: float = math.nan

    @property
    def ratio(self) -> float:
        return self.cpu_last_ms / self.cpu_first_ms if self.cpu_first_ms else math.nan


async def conversation_length(proc: Proc, url: str, name: str, length: int) -> LengthResult:
    """One session of ``length`` turns on an unpaced model: CPU per turn of its last
    turns against a fresh session's first turns, taken in alternation with them.

    On a shared machine the CPU a turn costs drifts by tens of percent over the minute
    a long conversation takes; comparing its last turns with its own first ones
    measured that drift as often as the conversation's length. The fresh session's
    turns are measured in the same seconds, one between each two of the long one's.
    """
    window = max(1, min(20, length // 5))
    await run_load(lambda: NativeConversation(url), 1, 3, spread_s=0)  # warm the process up
    conversation = NativeConversation(url)
    fresh = NativeConversation(url)
    await conversation.open()
    cpu: list[float] = []
    fresh_cpu: list[float] = []
    samples: list[TurnSample] = []
    fresh_samples: list[TurnSample] = []

    async def timed(talk: NativeConversation, i: int, into: list[float]) -> TurnSample:
        before = proc.cpu_ns()
        sample = await talk.turn(i)
        into.append((proc.cpu_ns() - before) / 1e9)
        return sample

    try:
        for i in range(length):
            if i == length - window:
                await fresh.open()
            if i >= length - window:
                fresh_samples.append(await timed(fresh, i - (length - window), fresh_cpu))
            samples.append(await timed(conversation, i, cpu))
    finally:
        await conversation.close()
        await fresh.close()

    def mean_ms(values: Sequence[float]) -> float:
        # The median turn: a few turns that another process on the machine slowed
        # down would move a mean of 20 turns by more than the conversation does.
        return pct(values, 50) * 1000

    def first_chunk(window_samples: Sequence[TurnSample]) -> float:
        return pct([s.first_chunk_ms or math.nan for s in window_samples], 50)

    return LengthResult(
        name,
        mean_ms(fresh_cpu),
        mean_ms(cpu[-window:]),
        first_chunk(fresh_samples),
        first_chunk(samples[-window:]),
        length,
        cpu_start_ms=mean_ms(cpu[:window]),
    )


async def idle_memory(proc: Proc, make: Callable[[], Conversation], count: int) -> float:
    """KiB of RSS per idle open session (``count`` of them, after one warm-up)."""
    warm = make()
    await warm.open()
    await asyncio.sleep(0.5)
    before = proc.rss_kb()
    conversations = [make() for _ in range(count)]
    opening = asyncio.Semaphore(64)

    async def open_one(c: Conversation) -> None:
        async with opening:
            await c.open()

    await asyncio.gather(*(open_one(c) for c in conversations))
    await asyncio.sleep(1.5)
    after = proc.rss_kb()
    await asyncio.gather(*(c.close() for c in [warm, *conversations]), return_exceptions=True)
    return (after - before) / count


async def routes(
    gw: Proc, model: Proc, turns: int, client_core: int | None
) -> list[tuple[str, list[float]]]:
    """Time to first chunk on every route, one conversation at a time."""
    ws = f"ws://127.0.0.1:{gw.port}"
    http = http_client(f"http://127.0.0.1:{gw.port}")
    model_http = http_client(f"http://127.0.0.1:{model.port}")
    makers: list[tuple[str, Callable[[], Conversation]]] = [
        ("model alone", lambda: ModelConversation(model_http, "bench")),
        ("/ws", lambda: NativeConversation(f"{ws}/ws")),
        ("/twilio", lambda: TwilioConversation(f"{ws}/twilio")),
        ("/retell", lambda: RetellConversation(f"{ws}/retell")),
        ("/v1/chat/completions", lambda: OpenAIConversation(http)),
        ("/layercode/agent", lambda: LayercodeConversation(http)),
    ]
    out = []
    try:
        for name, make in makers:
            point = await measure(name, make, 1, turns, 1, client_core=client_core, spread_s=0)
            out.append((name, point.firsts()))
    finally:
        await http.aclose()
        await model_http.aclose()
    return out


#: What a ``--workers`` worker's command line holds (multiprocessing's spawn).
WORKER_MARKER = "spawn_main"


async def worker_pids(proc: Proc, count: int, timeout_s: float = 30.0) -> tuple[int, ...]:
    """The worker processes of a gateway started with ``--workers count``."""
    if count == 1:
        return (proc.pid,)
    deadline = time.monotonic() + timeout_s
    while len(pids := children(proc.pid, WORKER_MARKER)) != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway started {len(pids)} workers, not {count}")
        await asyncio.sleep(0.1)
    return tuple(pids)


async def warm_every_worker(url: str, group: Workers, timeout_s: float = 60.0) -> None:
    """Play a turn over a few sessions at a time until every worker has served one: a
    worker still importing accepts nothing, and the others would take its share."""
    deadline = time.monotonic() + timeout_s
    served = [0] * len(group.pids)
    while True:
        conversations = [NativeConversation(url) for _ in range(2 * len(group.pids))]
        try:
            for c in conversations:
                await c.open()
            served = [a + b for a, b in zip(served, group.sessions(), strict=True)]
            await asyncio.gather(*(c.turn(0) for c in conversations))
        finally:
            await asyncio.gather(*(c.close() for c in conversations), return_exceptions=True)
        if all(served):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"a worker served no session in {timeout_s:g} s: {served}")
        await asyncio.sleep(0.2)


@dataclass
class WorkersResult:
    """The gateway on Redis with 1 worker and with 2, at the same load."""

    one: Point
    two: Point
    #: 1 worker with half the sessions: the load each of the 2 workers carried.
    half: Point | None = None

    @property
    def raw(self) -> float:
        """Turns/s with 2 workers over turns/s with 1, as measured."""
        return self.two.turns_per_s / self.one.turns_per_s

    @property
    def efficiency(self) -> float:
        """Turns per worker-CPU-second with 2 workers over that with 1."""
        return self.one.cpu_ms_per_turn / self.two.cpu_ms_per_turn

    @property
    def projected(self) -> float:
        """Throughput on 2 dedicated cores over 1 worker's, sessions split evenly:
        2 × the efficiency."""
        return 2 * self.efficiency

    @property
    def busiest_share(self) -> float:
        """The share of the sessions the busiest of the 2 workers held."""
        total = sum(self.two.census)
        return max(self.two.census) / total if total else math.nan

    @property
    def projected_split(self) -> float:
        """The same with the split this run's workers made: sessions stay on the worker
        that accepted them, so the busiest worker saturates first and serves its share
        of the turns, the other the same number per session."""
        return self.efficiency * min(2.0, 1 / self.busiest_share)

    @property
    def efficiency_equal(self) -> float:
        """Turns per worker-CPU-second with 2 workers over that of 1 worker carrying
        what each of them carried (half the sessions): the 1 worker with all of them
        is saturated, and a saturated loop spends less CPU per turn."""
        if self.half is None:
            return math.nan
        return self.half.cpu_ms_per_turn / self.two.cpu_ms_per_turn

    @property
    def projected_equal(self) -> float:
        """2 × :attr:`efficiency_equal`, the sessions split evenly."""
        return 2 * self.efficiency_equal

    @property
    def projected_equal_split(self) -> float:
        """:attr:`efficiency_equal` with the split this run's workers made."""
        return self.efficiency_equal * min(2.0, 1 / self.busiest_share)


def busy(point: Point, *names: str) -> float:
    """Cores the named processes kept busy over the measured window."""
    cpu = sum(point.others_cpu_s.get(n, math.nan) for n in names)
    return cpu / point.result.elapsed_s if point.result.elapsed_s else math.nan


CLIENT_SIDE = ("client", "model", "redis")


async def workers_section(
    args: argparse.Namespace,
    model: Proc,
    model_url: str,
    tmp: Path,
    server_core: int | None,
    client_core: int | None,
) -> WorkersResult:
    """The gateway on Redis, 1 worker (on the server core) then ``--workers 2`` (on both
    cores), under the same load; the client, the model and redis-server stay on the
    client core."""
    n, tokens = args.workers_sessions, args.reply_tokens
    turns = args.workers_turns or turns_for(n, args.workers_budget, 20)
    points: list[Point] = []
    for count, sessions in ((1, n), (2, n), (1, max(1, n // 2))):
        both = None if server_core is None or client_core is None else {server_core, client_core}
        gw_cores = server_core if count == 1 else both
        argv = ("--workers", str(count)) if count > 1 else ()
        # A fresh redis-server for each run, so that neither sees the other's sessions.
        with (
            redis_server(tmp / f"redis-{count}-{sessions}", core=client_core) as redis,
            gateway(
                model_url,
                args.workers_model,
                tmp,
                gw_cores,
                argv=argv,
                GATEWAY_STORE=f"redis://127.0.0.1:{redis.port}/0",
            ) as gw,
        ):
            group = Workers(gw, await worker_pids(gw, count))
            url = f"ws://127.0.0.1:{gw.port}/ws"
            await warm_every_worker(url, group)
            others: dict[str, Measured] = {"client": Pid(os.getpid()), "model": model}
            others["redis"] = redis
            others.update((f"worker {i + 1}", Pid(pid)) for i, pid in enumerate(group.pids))
            points.append(
                await measure(
                    f"{count} worker{'s' if count > 1 else ''}"
                    + (f", {sessions} sessions" if sessions != n else ""),
                    lambda u=url: NativeConversation(u),
                    sessions,
                    turns,
                    tokens,
                    proc=group,
                    think_s=args.think_s,
                    others=others,
                    census=group.sessions,
                )
            )
        _say(f"  … {count} worker(s), {sessions} sessions done")
    one, two, half = points
    result = WorkersResult(one, two, half)
    report_workers(args, result, n, turns)
    return result


def report_workers(args: argparse.Namespace, result: WorkersResult, n: int, turns: int) -> None:
    rows = []
    for p in (result.one, result.two) + ((result.half,) if result.half else ()):
        firsts = p.firsts()
        workers = [k for k in p.others_cpu_s if k.startswith("worker ")]
        total = sum(p.others_cpu_s[k] for k in workers)
        share = " / ".join(fmt(100 * p.others_cpu_s[k] / total) for k in workers) if total else "–"
        rows.append(
            [
                p.server,
                " / ".join(str(c) for c in p.census),
                str(p.turns),
                fmt(p.turns_per_s, 1),
                fmt(pct(firsts, 50)),
                fmt(pct(firsts, 99)),
                fmt(p.cpu_ms_per_turn, 2),
                fmt(1000 / p.cpu_ms_per_turn, 0),
                share,
                fmt(p.cpu_s / p.result.elapsed_s, 2),
                fmt(busy(p, *CLIENT_SIDE), 2),
                str(p.result.errors),
            ]
        )
    _say()
    pace = Pace(args.tokens_per_s, args.first_ms, args.reply_tokens, args.piece_tokens)
    pace = pace.for_model(args.workers_model)
    _say(
        f"### Workers: the gateway on Redis, 1 worker against `--workers 2` ({n} sessions × "
        f"{turns} turns, native /ws, {pace.reply_tokens}-token replies at "
        f"{pace.tokens_per_s:g} tokens/s, first piece after {pace.first_ms:g} ms; "
        "redis-server with AOF everysec)"
    )
    _say()
    _say(
        _md(
            [
                "gateway",
                "sessions per worker",
                "turns",
                "turns/s",
                "1st chunk p50 ms",
                "p99",
                "CPU ms/turn (all workers)",
                "turns per worker-CPU-s",
                "CPU share per worker %",
                "workers' cores busy",
                "client + model + redis cores busy",
                "errors",
            ],
            rows,
        )
    )
    two = result.two
    idle = 2 - two.cpu_s / two.result.elapsed_s - busy(two, *CLIENT_SIDE)
    _say()
    _say(
        f"Measured: {fmt(result.raw, 2)}× the turns/s. With 1 worker it had a core of its "
        f"own and used {fmt(result.one.cpu_s / result.one.result.elapsed_s, 2)} of it; "
        f"with 2 the machine's two cores were shared by the workers "
        f"({fmt(two.cpu_s / two.result.elapsed_s, 2)} cores), the load client, the model "
        f"and redis-server ({fmt(busy(two, *CLIENT_SIDE), 2)}), {fmt(max(idle, 0), 2)} "
        "idle: that figure is bounded by what the client side takes from the workers, "
        "and by the busiest worker (below). "
        f"Per turn the 2 workers spent {fmt(two.cpu_ms_per_turn, 2)} CPU-ms against "
        f"{fmt(result.one.cpu_ms_per_turn, 2)} (efficiency {fmt(result.efficiency, 2)}), "
        f"so on 2 cores of their own they would serve {fmt(result.projected, 2)}× "
        "one worker's turns/s with the sessions split evenly (projected). They were split "
        f"{' / '.join(str(c) for c in two.census)}: a session stays on the worker that "
        "accepted its connection, the busiest one saturates first, and with this split "
        f"the projection is {fmt(result.projected_split, 2)}×."
    )
    if result.half is not None:
        _say()
        _say(
            f"1 worker with {result.half.sessions} sessions (what each of the 2 carried) "
            f"spent {fmt(result.half.cpu_ms_per_turn, 2)} CPU-ms a turn: against that, "
            f"the efficiency of 2 workers is {fmt(result.efficiency_equal, 2)} and the "
            f"projection {fmt(result.projected_equal, 2)}× split evenly, "
            f"{fmt(result.projected_equal_split, 2)}× with this split. 1 worker with all "
            f"{n} sessions used {fmt(result.one.cpu_s / result.one.result.elapsed_s, 2)} of "
            "its core and its turns queued; a saturated loop spends less CPU per turn, so "
            "the projection against it measures saturation as much as scaling."
        )


def _nearest(points: list[Point], server: str, n: int) -> Point | None:
    mine = [p for p in points if p.server == server]
    if not mine:
        return None
    return min(mine, key=lambda p: (abs(math.log(p.sessions / n)), -p.sessions))


def targets(
    points: list[Point],
    lengths: dict[str, LengthResult],
    idle: dict[str, float],
    workers: WorkersResult | None = None,
) -> list[list[str]]:
    rows: list[list[str]] = []

    def row(
        what: str, n_note: str, gw: float, base: float, shown: float, goal: str, ok: bool | None
    ) -> None:
        verdict = "–" if ok is None or math.isnan(shown) else ("pass" if ok else "FAIL")
        rows.append([what, n_note, fmt(gw, 2), fmt(base, 2), fmt(shown, 2), goal, verdict])

    g, r = _nearest(points, "gateway", 100), _nearest(points, "relay", 100)
    if g and r:
        # A tiny run can measure no CPU at all for the relay: no ratio then.
        ratio = g.cpu_ms_per_token / r.cpu_ms_per_token if r.cpu_ms_per_token else math.nan
        row(
            "CPU ms per token vs relay",
            f"N={g.sessions}",
            g.cpu_ms_per_token,
            r.cpu_ms_per_token,
            ratio,
            "ratio ≤ 1.5",
            ratio <= 1.5,
        )
    if "gateway" in lengths and "relay" in lengths:
        gl = lengths["gateway"]
        row(
            "CPU ms per turn, last turns vs a fresh session's first (alongside)",
            f"turn {gl.turns}",
            gl.cpu_last_ms,
            gl.cpu_first_ms,
            gl.ratio,
            "ratio ≤ 1.2",
            gl.ratio <= 1.2,
        )
    g, r = _nearest(points, "gateway", 200), _nearest(points, "relay", 200)
    if g and r:
        diff = pct(g.firsts(), 99) - pct(r.firsts(), 99)
        row(
            "p99 first chunk minus relay's (ms)",
            f"N={g.sessions}",
            pct(g.firsts(), 99),
            pct(r.firsts(), 99),
            diff,
            "≤ 100 ms",
            diff <= 100,
        )
        g1, r1 = _nearest(points, "gateway", 1), _nearest(points, "relay", 1)
        if g1 and r1 and g1 is not g:
            # /ws waits for the first whole sentence; what load adds on top is the queueing.
            added = (pct(g.firsts(), 99) - pct(g1.firsts(), 50)) - (
                pct(r.firsts(), 99) - pct(r1.firsts(), 50)
            )
            row(
                "same, less each server's own p50 at N=1 (ms)",
                f"N={g.sessions}",
                pct(g.firsts(), 99) - pct(g1.firsts(), 50),
                pct(r.firsts(), 99) - pct(r1.firsts(), 50),
                added,
                "≤ 100 ms",
                added <= 100,
            )
    g, r = _nearest(points, "gateway", 100), _nearest(points, "relay", 100)
    if g and r:
        row(
            "event-loop stall, worst probe round trip (ms)",
            f"N={g.sessions}",
            g.stall_ms,
            r.stall_ms,
            g.stall_ms,
            "≤ 20 ms",
            g.stall_ms <= 20,
        )
    if "gateway" in idle:
        row(
            "idle session (KiB of RSS)",
            "",
            idle["gateway"],
            idle.get("relay", math.nan),
            idle["gateway"],
            "≤ 20 KiB",
            idle["gateway"] <= 20,
        )
    if workers is not None:
        at = f"N={workers.one.sessions}, Redis"
        one, two = workers.one, workers.two
        rows.append(
            [
                "throughput on 2 workers vs 1, measured (turns/s)",
                at,
                fmt(two.turns_per_s, 1),
                fmt(one.turns_per_s, 1),
                fmt(workers.raw, 2),
                "≥ 1.8×",
                "– (the client shares the 2 cores)",
            ]
        )
        rows.append(
            [
                "same, projected on 2 dedicated cores, sessions split evenly "
                "(2 × turns per worker-CPU-s, 2 workers vs 1)",
                at,
                fmt(1000 / two.cpu_ms_per_turn, 0),
                fmt(1000 / one.cpu_ms_per_turn, 0),
                fmt(workers.projected, 2),
                "≥ 1.8×",
                "– (the split below is what the gateway made)",
            ]
        )
        ok = workers.projected_split >= 1.8
        rows.append(
            [
                "same, projected on 2 dedicated cores with this run's split "
                f"({' / '.join(str(c) for c in two.census)} sessions)",
                at,
                "–",
                "–",
                fmt(workers.projected_split, 2),
                "≥ 1.8×",
                "–"
                if math.isnan(workers.projected_split)
                else ("pass" if ok else "FAIL") + " (projected: the raw figure is bounded "
                "by the client sharing the cores)",
            ]
        )
        if workers.half is not None:
            ok = workers.projected_equal_split >= 1.8
            rows.append(
                [
                    "same, against 1 worker carrying what each of the 2 did "
                    f"({workers.half.sessions} sessions), with this run's split",
                    at,
                    fmt(1000 / two.cpu_ms_per_turn, 0),
                    fmt(1000 / workers.half.cpu_ms_per_turn, 0),
                    fmt(workers.projected_equal_split, 2),
                    "≥ 1.8×",
                    "–"
                    if math.isnan(workers.projected_equal_split)
                    else ("pass" if ok else "FAIL") + " (projected, like for like)",
                ]
            )
    return rows


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a run of a couple of minutes")
    parser.add_argument("--sessions", type=int, nargs="+", help="the sweep's session counts")
    parser.add_argument("--turns", type=int, help="turns per session (default: by N)")
    parser.add_argument("--turn-budget", type=int, help="about this many turns per point")
    parser.add_argument("--think-s", type=float, default=0.0, help="pause between turns")
    parser.add_argument("--length", type=int, help="turns of the conversation-length sweep")
    parser.add_argument("--idle", type=int, help="idle sessions opened for the memory figure")
    parser.add_argument("--route-turns", type=int, help="turns per route")
    parser.add_argument("--tokens-per-s", type=float, default=Pace.tokens_per_s)
    parser.add_argument("--first-ms", type=float, default=Pace.first_ms)
    parser.add_argument("--reply-tokens", type=int, default=Pace.reply_tokens)
    parser.add_argument("--piece-tokens", type=int, default=Pace.piece_tokens)
    parser.add_argument("--store", help="GATEWAY_STORE of the gateway (default: SQLite)")
    parser.add_argument("--workers-sessions", type=int, help="sessions of the workers section")
    parser.add_argument("--workers-turns", type=int, help="turns per session there")
    parser.add_argument("--workers-budget", type=int, help="about this many turns per run there")
    parser.add_argument(
        "--workers-model",
        default=WORKERS_MODEL,
        help="the model (and so the pace, bench/fake_model.py) of the workers section",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="what to run (default: everything)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.sessions is None:
        args.sessions = [1, 10, 50] if quick else [1, 10, 30, 50, 100, 200, 300, 1000]
    if args.turn_budget is None:
        args.turn_budget = 12 if quick else 100
    if args.length is None:
        args.length = 60 if quick else 300
    if args.idle is None:
        args.idle = 200 if quick else 1000
    if args.route_turns is None:
        args.route_turns = 3 if quick else 8
    if args.workers_sessions is None:
        args.workers_sessions = 200
    if args.workers_budget is None:
        args.workers_budget = 1600 if quick else 4000
    return args


async def run(args: argparse.Namespace) -> None:
    server_core, client_core = cores()
    pin_self(client_core)
    pace = Pace(args.tokens_per_s, args.first_ms, args.reply_tokens, args.piece_tokens)
    _say(
        f"server core {server_core}, client core {client_core}; "
        f"model: {pace.tokens_per_s:g} tokens/s, first piece after {pace.first_ms:g} ms, "
        f"{pace.reply_tokens}-token replies in {pace.piece_tokens}-token pieces"
    )
    started_at = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        model_args = [
            "bench/fake_model.py",
            f"--tokens-per-s={pace.tokens_per_s}",
            f"--first-ms={pace.first_ms}",
            f"--reply-tokens={pace.reply_tokens}",
            f"--piece-tokens={pace.piece_tokens}",
        ]
        model = stack.enter_context(started(model_args, core=client_core))
        model_url = f"http://127.0.0.1:{model.port}"
        store = {"GATEWAY_STORE": args.store} if args.store else {}
        points: list[Point] = []
        gw = None
        if {"sweep", "routes"} & set(args.sections):
            # Started only when needed: idle, they would still share the server core.
            relay_proc = stack.enter_context(relay(model_url, "bench", server_core))
            gw = stack.enter_context(gateway(model_url, "bench", tmp, server_core, **store))
            # Warm up both (imports, first connections) outside every measurement.
            for url in (f"ws://127.0.0.1:{relay_proc.port}/ws", f"ws://127.0.0.1:{gw.port}/ws"):
                await run_load(lambda u=url: NativeConversation(u), 2, 1, spread_s=0)
            if "sweep" in args.sections:
                points = await sweep(args, model, relay_proc, gw, client_core)

        lengths: dict[str, LengthResult] = {}
        if "length" in args.sections:
            await length_section(args, model_url, tmp, server_core, store, lengths)

        idle: dict[str, float] = {}
        if "idle" in args.sections:
            await idle_section(args, model_url, tmp, server_core, store, idle)

        if "routes" in args.sections and gw is not None:
            await routes_section(args, gw, model, model_url, tmp, server_core, client_core, store)

        workers = None
        if "workers" in args.sections:
            workers = await workers_section(args, model, model_url, tmp, server_core, client_core)

        _say()
        _say("### Targets (issue #16), gateway against its baseline in this run")
        _say()
        _say(
            _md(
                ["target", "at", "gateway", "baseline", "figure", "goal", "verdict"],
                targets(points, lengths, idle, workers),
            )
        )
    _say()
    _say(f"(suite took {time.perf_counter() - started_at:.0f} s)")


async def length_section(
    args: argparse.Namespace,
    model_url: str,
    tmp: Path,
    server_core: int | None,
    store: dict[str, str],
    lengths: dict[str, LengthResult],
) -> None:
    with relay(model_url, FAST_MODEL, server_core) as fast_relay:
        url = f"ws://127.0.0.1:{fast_relay.port}/ws"
        lengths["relay"] = await conversation_length(fast_relay, url, "relay", args.length)
    with gateway(model_url, FAST_MODEL, tmp, server_core, **store) as fast_gw:
        url = f"ws://127.0.0.1:{fast_gw.port}/ws"
        lengths["gateway"] = await conversation_length(fast_gw, url, "gateway", args.length)
    _say()
    _say(
        f"### Conversation length (one session, {args.length} turns, unpaced model; "
        "a fresh session takes a turn between each two of its last ones)"
    )
    _say()
    window = max(1, min(20, args.length // 5))
    _say(
        _md(
            [
                "server",
                f"CPU ms/turn (median), its turns 1–{window}",
                f"a fresh session's turns 1–{window}, alongside the last",
                f"last {window} turns",
                "ratio, last over fresh",
                "1st chunk ms, fresh",
                "last",
            ],
            [
                [
                    r.server,
                    fmt(r.cpu_start_ms, 1),
                    fmt(r.cpu_first_ms, 1),
                    fmt(r.cpu_last_ms, 1),
                    fmt(r.ratio, 2),
                    fmt(r.first_chunk_first, 1),
                    fmt(r.first_chunk_last, 1),
                ]
                for r in lengths.values()
            ],
        )
    )


async def idle_section(
    args: argparse.Namespace,
    model_url: str,
    tmp: Path,
    server_core: int | None,
    store: dict[str, str],
    idle: dict[str, float],
) -> None:
    # Fresh processes: memory freed by the sweep's sessions would be reused and hide
    # what idle sessions cost.
    with relay(model_url, "bench", server_core) as fresh_relay:
        url = f"ws://127.0.0.1:{fresh_relay.port}/ws"
        idle["relay"] = await idle_memory(fresh_relay, lambda: NativeConversation(url), args.idle)
    with gateway(model_url, "bench", tmp, server_core, **store) as fresh_gw:
        url = f"ws://127.0.0.1:{fresh_gw.port}/ws"
        idle["gateway"] = await idle_memory(fresh_gw, lambda: NativeConversation(url), args.idle)
    _say()
    _say(f"### Idle sessions ({args.idle} open WebSocket sessions, RSS growth)")
    _say()
    _say(_md(["server", "KiB per idle session"], [[k, fmt(v, 1)] for k, v in idle.items()]))


async def routes_section(
    args: argparse.Namespace,
    gw: Proc,
    model: Proc,
    model_url: str,
    tmp: Path,
    server_core: int | None,
    client_core: int | None,
    store: dict[str, str],
) -> None:
    by_route = await routes(gw, model, args.route_turns, client_core)
    sentences = {name: "sentence" for name in SENTENCE_EVERYWHERE}
    with gateway(model_url, "bench", tmp, server_core, **store, **sentences) as sentence_gw:
        by_route_sentence = dict(await routes(sentence_gw, model, args.route_turns, client_core))
    model_p50 = pct(by_route[0][1], 50)
    _say()
    _say(
        f"### Time to first chunk per route (one conversation, {args.route_turns} turns): "
        "each route's default chunking against whole sentences everywhere"
    )
    _say()
    rows = []
    for name, firsts in by_route:
        sentence = pct(by_route_sentence.get(name, []), 50)
        rows.append(
            [
                name,
                ROUTE_MODES.get(name, "–"),
                fmt(pct(firsts, 50)),
                fmt(pct(firsts, 50) - model_p50),
                fmt(sentence),
                fmt(sentence - pct(firsts, 50)),
            ]
        )
    _say(
        _md(
            [
                "route",
                "default chunking",
                "p50 ms",
                "minus the model's",
                "p50 ms, sentences",
                "gained ms",
            ],
            rows,
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    # SIGTERM unwinds like Ctrl-C, so that every started process is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
