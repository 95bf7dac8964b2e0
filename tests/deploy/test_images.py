"""The Dockerfiles and docker-compose.yml, checked without a Docker engine."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from chart_support import REPO, in_ci, which

SERVICES = sorted(p.parent for p in (REPO / "services").glob("*/Dockerfile"))
COMPOSE = REPO / "docker-compose.yml"


def _tool(name: str) -> str:
    path = which(name)
    if path is None:
        message = f"{name} is not installed (a dev dependency of the root pyproject)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def _final_stage(dockerfile: Path) -> list[str]:
    """Instructions of the last stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def _instruction(stage: list[str], name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in stage if line.split(None, 1)[0].upper() == name]


def _console_scripts(service: Path) -> dict[str, str]:
    scripts: dict[str, str] = tomllib.loads((service / "pyproject.toml").read_text())["project"][
        "scripts"
    ]
    return scripts


def test_every_service_has_a_dockerfile():
    assert {p.name for p in SERVICES} == {"api", "worker-ml", "worker-cmd", "worker-data"}


def test_hadolint_finds_nothing():
    result = subprocess.run(
        [_tool("hadolint"), *(str(s / "Dockerfile") for s in SERVICES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_entrypoint_is_the_services_console_script_in_exec_form(service):
    stage = _final_stage(service / "Dockerfile")
    (entrypoint,) = _instruction(stage, "ENTRYPOINT")
    argv = json.loads(entrypoint)  # exec form: SIGTERM reaches the process, not a shell
    assert argv == list(_console_scripts(service))
    # the same script the local stack runs from the workspace venv
    assert (REPO / ".venv" / "bin" / argv[0]).exists()
    for cmd in _instruction(stage, "CMD"):
        json.loads(cmd)


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_image_is_slim_non_root_and_compiler_free(service):
    dockerfile = service / "Dockerfile"
    text = dockerfile.read_text()
    stage = _final_stage(dockerfile)
    assert _instruction(stage, "USER") == ["10001:10001"]
    assert not _instruction(stage, "HEALTHCHECK")
    assert "python:3.11-slim" in text
    assert re.search(r"pip install --no-cache-dir uv==\d+\.\d+\.\d+", text)
    assert "--frozen" in text and "--no-install-workspace" in text and "--no-dev" in text
    final = "\n".join(stage)
    for word in ("gcc", "build-essential", "apt-get install", "uv sync", "pip install"):
        assert word not in final, f"{word!r} in the final stage of {dockerfile}"
    (package,) = [s for s in _console_scripts(service)]
    assert f"--package {package}" in text


def test_every_image_builds_with_the_same_pinned_uv():
    pins = {re.findall(r"uv==([\d.]+)", (s / "Dockerfile").read_text())[0] for s in SERVICES}
    assert len(pins) == 1, pins


def test_dockerignore_keeps_the_context_small():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "**" in lines, "everything is excluded unless listed"
    for needed in ("!pyproject.toml", "!uv.lock", "!libs/**", "!services/**"):
        assert needed in lines


def test_compose_file_matches_the_compose_specification():
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_same_commands_as_the_images():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {
        "rabbitmq",
        "postgres",
        "migrate",
        "api",
        "worker-ml",
        "worker-cmd",
        "worker-data",
    } <= set(services)
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3-management")
    assert services["postgres"]["image"] == "postgres:16"
    for name in ("migrate", "api", "worker-ml", "worker-cmd", "worker-data"):
        service = services[name]
        dockerfile = REPO / service["build"]["dockerfile"]
        assert service["build"]["context"] == "."
        assert dockerfile.parent.name == ("api" if name in ("migrate", "api") else name)
        env = service["environment"]
        assert env["CONVEYOR_BROKER_URL"].endswith("@rabbitmq:5672/%2F")
        assert "@postgres:5432/" in env["CONVEYOR_DATABASE_URL"]
        assert service.get("read_only") is True
        if name != "migrate":
            assert "healthcheck" in service, name
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["migrate"]
    assert services["api"]["command"] == ["serve"]
    assert services["api"]["environment"]["CONVEYOR_AUTO_MIGRATE"] == "false"
    for name in ("rabbitmq", "postgres"):
        assert "healthcheck" in services[name]
