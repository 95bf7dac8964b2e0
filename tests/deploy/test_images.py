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
from conveyor_core.jobs import JOB_TYPES
from support.packaging import uv_executable

DOCKERFILE = REPO / "services" / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
# Every service: the gateway and one worker per job type, named by the registry.
SERVICES = ["api", *(job.service for job in JOB_TYPES.values())]


def _tool(name: str) -> str:
    path = which(name)
    if path is None:
        message = f"{name} is not installed (a dev dependency of the root pyproject)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def _stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    starts = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    return [lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]


def _instruction(stage: list[str], name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in stage if line.split(None, 1)[0].upper() == name]


def _console_scripts(service: str) -> dict[str, str]:
    pyproject = tomllib.loads((REPO / "services" / service / "pyproject.toml").read_text())
    scripts: dict[str, str] = pyproject["project"]["scripts"]
    return scripts


def _built_for(service: str) -> list[str]:
    """The build stage's RUN lines with SERVICE substituted, as `--build-arg` would."""
    build, _ = _stages(DOCKERFILE)
    return [run.replace("${SERVICE}", service) for run in _instruction(build, "RUN")]


def test_every_service_directory_is_the_gateway_or_a_registered_worker():
    directories = {p.parent.name for p in (REPO / "services").glob("*/pyproject.toml")}
    assert directories == set(SERVICES)
    assert not list((REPO / "services").glob("*/Dockerfile")), "one Dockerfile for all"


def test_hadolint_finds_nothing():
    result = subprocess.run(
        [_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_each_image_installs_its_package_and_enters_through_its_console_script(service):
    (script,) = _console_scripts(service)
    assert script == f"conveyor-{service}"  # the package and script the Dockerfile derives
    runs = "\n".join(_built_for(service))
    assert f"uv sync --frozen --no-dev --package {script} --no-install-workspace" in runs
    assert f"uv sync --frozen --no-dev --package {script} --no-editable" in runs
    assert f"ln -s {script} /app/.venv/bin/conveyor-service" in runs
    _, final = _stages(DOCKERFILE)
    (entrypoint,) = _instruction(final, "ENTRYPOINT")
    # exec form: SIGTERM reaches the process, not a shell
    assert json.loads(entrypoint) == ["conveyor-service"]
    assert not _instruction(final, "CMD")  # the gateway serves without arguments
    # the same script the local stack runs from the workspace venv
    assert (REPO / ".venv" / "bin" / script).exists()


@pytest.mark.parametrize("service", SERVICES)
def test_each_image_needs_only_the_workspace_packages_it_copies(service):
    # The build copies libs/conveyor-core and the service alone: no other workspace
    # package (conveyor-client, the tests' and bench's conveyor-harness) may be a dependency.
    command = [uv_executable(), "export", "--frozen", "--package", f"conveyor-{service}"]
    command += ["--no-dev", "--no-hashes", "--quiet"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    members = {line for line in result.stdout.splitlines() if line.startswith("-e ")}
    assert members == {"-e ./libs/conveyor-core", f"-e ./services/{service}"}
    copied = _instruction(_stages(DOCKERFILE)[0], "COPY")
    assert "libs/conveyor-core/ libs/conveyor-core/" in copied


def test_the_image_is_slim_non_root_and_compiler_free():
    text = DOCKERFILE.read_text()
    _, final = _stages(DOCKERFILE)
    assert _instruction(final, "USER") == ["10001:10001"]
    assert not _instruction(final, "HEALTHCHECK")
    assert "python:3.11-slim" in text
    assert re.search(r"pip install --no-cache-dir uv==\d+\.\d+\.\d+", text)
    assert "--frozen" in text and "--no-install-workspace" in text and "--no-dev" in text
    joined = "\n".join(final)
    for word in ("gcc", "build-essential", "apt-get install", "uv sync", "pip install"):
        assert word not in joined, f"{word!r} in the final stage of {DOCKERFILE}"


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
    assert {"rabbitmq", "postgres", "migrate", *SERVICES} <= set(services)
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3-management")
    assert services["postgres"]["image"] == "postgres:16"
    for name in ("migrate", *SERVICES):
        service = services[name]
        assert service["build"]["context"] == "."
        assert REPO / service["build"]["dockerfile"] == DOCKERFILE
        assert service["build"]["args"] == {"SERVICE": "api" if name == "migrate" else name}
        assert service["image"] == f"conveyor/{service['build']['args']['SERVICE']}:dev"
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


def test_the_procfile_runs_the_gateway_and_every_registered_worker():
    # `make run` starts what the Procfile lists: a fourth job type needs its line there.
    lines = (REPO / "Procfile").read_text().splitlines()
    processes = dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))
    assert set(processes) == set(SERVICES)
    for service, command in processes.items():
        assert f"conveyor-{service}" in command.split()
