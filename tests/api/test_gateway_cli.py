"""`conveyor-api` as an operator runs it: a job store it cannot open is one clear line."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest
from support.stack import VENV_BIN, free_port


def migrate(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    return subprocess.run(
        [str(VENV_BIN / "conveyor-api"), "migrate"],
        env={**env, "CONVEYOR_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.postgres
def test_a_missing_database_is_one_line_that_says_how_to_create_it():
    result = migrate("postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_never_created")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "conveyor_never_created does not exist" in line
    assert line.endswith("create it: createdb -h 127.0.0.1 -U postgres conveyor_never_created")


def test_an_unreachable_store_names_it_without_its_password():
    result = migrate("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/jobs")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        "conveyor-api: cannot open the job store postgresql+psycopg://postgres:***@127.0.0.1:1/jobs"
    )
    assert "s3cret" not in line


def test_without_a_command_it_serves_as_the_image_entrypoint_does(tmp_path):
    # services/Dockerfile has no CMD: `docker run conveyor/api` runs `conveyor-api` bare.
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    port = free_port()
    env |= {"CONVEYOR_API_PORT": str(port), "CONVEYOR_DATABASE_URL": f"sqlite:///{tmp_path}/j.db"}
    gateway = subprocess.Popen(
        [str(VENV_BIN / "conveyor-api")], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert gateway.poll() is None, "conveyor-api exited instead of serving"
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the gateway did not answer in 30 s"
                time.sleep(0.2)
        assert response.json()["status"] == "ok"
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
