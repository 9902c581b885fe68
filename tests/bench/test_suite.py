"""The benchmark suite runs end to end (tiny and unpaced: its figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_suite_runs_every_section_without_a_failed_turn() -> None:
    tiny = ["--quick", "--sessions", "2", "--turns", "1", "--length", "3", "--idle", "3"]
    unpaced = ["--route-turns", "1", "--tokens-per-s", "0", "--first-ms", "0"]
    run = subprocess.run(
        [sys.executable, "bench/suite.py", *tiny, *unpaced],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for section in ("Concurrent sessions", "Conversation length", "Idle sessions", "Targets"):
        assert f"### {section}" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| 2 | ")]
    assert [row[1] for row in rows] == ["model", "relay", "gateway"]
    assert all(row[-1].rstrip(" |") == "0" for row in rows)  # no errors
    for route in ("/ws", "/twilio", "/retell", "/v1/chat/completions", "/layercode/agent"):
        assert f"| {route} | " in out
