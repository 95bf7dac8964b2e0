"""Adding a job type is one module, one registry entry and one worker package.

In a copy of the repository, a toy fourth type (`toy.echo`, worker `toy`) is added as the
README says; `make generate`'s two scripts and `uv lock` run there. Then the chart renders
its worker and its scaler, compose validates with its service, the docs describe it, and a
gateway and a worker started from the copy run a toy job end to end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chart_support import CHART, REPO, tool, which
from support.packaging import uv_executable
from support.stack import running_stack

TOY_MODULE = '''"""toy.echo: says its text back in capitals."""

from pydantic import BaseModel, Field

from conveyor_core.jobs.base import JobType, StrictModel


class EchoParams(StrictModel):
    text: str = Field(min_length=1, max_length=100, description="What to say back.")


class EchoResult(BaseModel):
    text: str


TOY_ECHO = JobType(
    name="toy.echo",
    worker="toy",
    params=EchoParams,
    result=EchoResult,
    summary="Say the text back in capitals.",
    example={"text": "hello"},
    soft_time_limit_s=60,
    time_limit_s=90,
)
'''

TOY_WORKER_PYPROJECT = """[project]
name = "conveyor-worker-toy"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["conveyor-core[runtime]"]

[project.scripts]
conveyor-worker-toy = "conveyor_worker_toy.__main__:main"

[tool.uv.sources]
conveyor-core = { workspace = true }

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/conveyor_worker_toy"]
"""

TOY_WORKER_MAIN = '''"""`conveyor-worker-toy`: consume the toy job queue and run its jobs."""

from conveyor_core.jobs.toy import TOY_ECHO, EchoParams, EchoResult
from conveyor_core.worker import JobContext, run_worker


def run(params: EchoParams, ctx: JobContext) -> EchoResult:
    return EchoResult(text=params.text.upper())


def main() -> None:
    run_worker(TOY_ECHO, run)


if __name__ == "__main__":
    main()
'''


def add_the_toy_type(copy: Path) -> None:
    jobs = copy / "libs" / "conveyor-core" / "src" / "conveyor_core" / "jobs"
    (jobs / "toy.py").write_text(TOY_MODULE)
    registry = (jobs / "__init__.py").read_text()
    registry = registry.replace(
        "from conveyor_core.jobs.ml import ML_TRAIN\n",
        "from conveyor_core.jobs.ml import ML_TRAIN\nfrom conveyor_core.jobs.toy import TOY_ECHO\n",
    )
    registry = registry.replace("DATA_TRANSFORM)}", "DATA_TRANSFORM, TOY_ECHO)}")
    assert "TOY_ECHO)}" in registry, "the registry's shape changed: update this test"
    (jobs / "__init__.py").write_text(registry)
    package = copy / "services" / "worker-toy" / "src" / "conveyor_worker_toy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(TOY_WORKER_MAIN)
    (copy / "services" / "worker-toy" / "pyproject.toml").write_text(TOY_WORKER_PYPROJECT)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files (not those git ignores), with the toy type added and regenerated."""
    copy = tmp_path_factory.mktemp("fourth-type") / "repo"
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    add_the_toy_type(copy)
    env = {**os.environ, "PYTHONPATH": str(copy / "libs" / "conveyor-core" / "src")}
    for script in ("docs/build.py", "deploy/generate.py"):
        subprocess.run([sys.executable, script], cwd=copy, env=env, check=True, capture_output=True)
    locked = subprocess.run(
        [uv_executable(), "lock", "--offline"], cwd=copy, capture_output=True, text=True
    )
    assert locked.returncode == 0, locked.stderr
    return copy


def test_the_lock_file_gains_the_worker_package(copy: Path):
    assert 'name = "conveyor-worker-toy"' in (copy / "uv.lock").read_text()


def test_the_chart_renders_the_toy_worker_and_its_scaler(copy: Path):
    rendered = subprocess.run(
        [
            tool("helm"),
            "template",
            "conveyor",
            str(copy / CHART.relative_to(REPO)),
            "-f",
            str(CHART / "ci" / "default-values.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = [o for o in yaml.safe_load_all(rendered.stdout) if o]
    named = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    deployment = named["Deployment", "conveyor-worker-toy"]
    assert deployment["metadata"]["labels"]["conveyor.io/queue"] == "conveyor.toy.echo"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("conveyor/worker-toy:")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["CONVEYOR_SOFT_TIME_LIMIT_S"], env["CONVEYOR_TIME_LIMIT_S"]) == ("60", "90")
    (trigger,) = named["ScaledObject", "conveyor-worker-toy"]["spec"]["triggers"]
    assert ("NetworkPolicy", "conveyor-worker-toy") in named
    assert "type = 'toy.echo'" in trigger["metadata"]["query"]


def test_compose_and_the_procfile_run_the_toy_worker(copy: Path):
    compose = copy / "docker-compose.yml"
    service = yaml.safe_load(compose.read_text())["services"]["worker-toy"]
    assert service["build"]["args"] == {"SERVICE": "worker-toy"}
    assert service["read_only"] is True  # the shared worker block applies
    checker = which("check-jsonschema")
    assert checker, "check-jsonschema is a dev dependency of the root pyproject"
    valid = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(compose)],
        capture_output=True,
        text=True,
    )
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert (
        "worker-toy: CONVEYOR_METRICS_PORT=9104 conveyor-worker-toy"
        in (copy / "Procfile").read_text().splitlines()
    )


def test_the_docs_describe_the_toy_type(copy: Path):
    page = (copy / "docs" / "job-types.md").read_text()
    assert "## `toy.echo`" in page
    assert "services/worker-toy" in page and "What to say back." in page


def test_a_gateway_and_a_worker_from_the_copy_run_a_toy_job(copy: Path, tmp_path: Path):
    core, worker = (copy / "libs" / "conveyor-core" / "src", copy / "services" / "worker-toy")
    with running_stack(tmp_path, "sqlite", workers=(), PYTHONPATH=str(core)) as stack:
        stack.start_service(
            "worker-toy",
            [sys.executable, "-m", "conveyor_worker_toy"],
            PYTHONPATH=os.pathsep.join([str(core), str(worker / "src")]),
        )
        stack.wait_ready()
        with stack.client() as client:
            types = client.get("/v1/job-types").json()
            assert "toy.echo" in {t["name"] for t in types}
            refused = client.post("/v1/jobs", json={"type": "toy.echo", "params": {"text": ""}})
            assert refused.status_code == 422
            job = stack.submit(client, "toy.echo", {"text": "hello"})
            finished = stack.wait_for(client, job["id"], {"succeeded", "failed"}, timeout=60)
        assert (finished["state"], finished["result"]) == ("succeeded", {"text": "HELLO"})
