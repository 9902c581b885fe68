"""The benchmark suite runs end to end (tiny and unpaced: its figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_suite_runs_every_section_without_a_failed_turn() -> None:
    tiny = ["--quick", "--sessions", "2", "--turns", "1", "--length", "3", "--idle", "3"]
    unpaced = ["--route-turns", "1", "--tokens-per-s", "0", "--first-ms", "0"]
    workers = ["--workers-sessions", "16", "--workers-turns", "1", "--workers-model", "bench-t0-f0"]
    run = subprocess.run(
        [sys.executable, "bench/suite.py", *tiny, *unpaced, *workers],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for section in ("Concurrent sessions", "Conversation length", "Idle sessions", "Workers"):
        assert f"### {section}" in out
    assert "### Targets" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| 2 | ")]
    assert [row[1] for row in rows] == ["model", "relay", "gateway"]
    assert all(row[-1].rstrip(" |") == "0" for row in rows)  # no errors
    for route in ("/ws", "/twilio", "/retell", "/v1/chat/completions", "/layercode/agent"):
        assert f"| {route} | " in out
    # The workers section: 1 worker, then 2 that both served sessions, no failed turn.
    by_workers = {
        row[0].strip("| "): row
        for row in (line.split(" | ") for line in out.splitlines())
        if row[0] in ("| 1 worker", "| 2 workers", "| 1 worker, 8 sessions")
    }
    assert by_workers["1 worker"][1] == "16"
    split = [int(n) for n in by_workers["2 workers"][1].split(" / ")]
    assert len(split) == 2
    assert all(split)  # both workers served sessions
    assert sum(split) == 16
    assert all(row[-1].rstrip(" |") == "0" for row in by_workers.values())
    assert "| throughput on 2 workers vs 1, measured (turns/s) | N=16, Redis | " in out
    assert "(projected: " in out
    # ... and 1 worker carrying what each of the 2 did, the like-for-like baseline.
    assert by_workers["1 worker, 8 sessions"][1] == "8"
    assert "| same, against 1 worker carrying what each of the 2 did (8 sessions)" in out
