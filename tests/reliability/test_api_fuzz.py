"""schemathesis against the gateway's own OpenAPI schema: no 5xx, every answer as documented."""

from __future__ import annotations

import subprocess

import pytest
from support.stack import VENV_BIN, Stack, running_stack

CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    # No workers: generated jobs stay queued. No rate limit or quota: they would answer 429.
    with running_stack(
        tmp_path_factory.mktemp("fuzz"),
        "sqlite",
        workers=(),
        CONVEYOR_SUBMIT_RATE_PER_S="0",
        CONVEYOR_MAX_QUEUED_PER_KEY="0",
    ) as s:
        yield s


def test_every_operation_survives_generated_requests(stack: Stack):
    result = subprocess.run(
        [
            str(VENV_BIN / "schemathesis"),
            "run",
            f"{stack.base_url}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--seed",
            "20261127",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "10",
            "--suppress-health-check",
            "all",
            "--warnings",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=stack.workdir,
    )
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
