"""The `conveyor` command run as a user runs it: a subprocess against a real stack."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conveyor_core.settings import DEFAULT_COMMAND_CATALOG
from support.clients import KeyedStack
from support.clients import keyed_stack as start_keyed_stack
from support.stack import VENV_BIN, Stack

CONVEYOR = str(VENV_BIN / "conveyor")


@dataclass
class Cli:
    """Runs `conveyor` with CONVEYOR_URL / CONVEYOR_API_KEY set, as a user's shell would."""

    env: dict[str, str]
    cwd: Path

    def run(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CONVEYOR, *args],
            env={**self.env, **env},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def run_binary(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [CONVEYOR, *args], env=self.env, cwd=self.cwd, capture_output=True, timeout=timeout
        )

    def json(self, *args: str, **env: str) -> Any:
        """Run with --output json; the command must succeed and print one JSON document."""
        result = self.run(*args, "--output", "json", **env)
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
        return json.loads(result.stdout)


def cli_env(stack: Stack, api_key: str | None, home: Path) -> dict[str, str]:
    env = {key: value for key, value in stack.env.items() if not key.startswith("CONVEYOR_")}
    env |= {
        "CONVEYOR_URL": stack.base_url,
        "HOME": str(home),  # no ~/.kube/config of the machine's
        "COLUMNS": "200",  # tables are not cut to an 80-column pipe
        "NO_COLOR": "1",
    }
    env.pop("KUBECONFIG", None)
    if api_key:
        env["CONVEYOR_API_KEY"] = api_key
    return env


# The catalog plus a command that prints over time, to watch output arrive line by line.
PYTHON = "/usr/bin/python3"
CATALOG = {
    **{name: command.model_dump() for name, command in DEFAULT_COMMAND_CATALOG.items()},
    "python": {"executable": PYTHON, "max_args": 4, "description": "Tests only."},
}


@pytest.fixture(scope="package")
def keyed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedStack]:
    with start_keyed_stack(
        tmp_path_factory.mktemp("cli-stack"), CONVEYOR_COMMAND_CATALOG=json.dumps(CATALOG)
    ) as running:
        yield running


@pytest.fixture
def cli(keyed_stack: KeyedStack, tmp_path: Path) -> Cli:
    """`conveyor` as an ordinary (non-admin) key's user, in a fresh working directory."""
    return Cli(cli_env(keyed_stack.stack, keyed_stack.user_key, tmp_path), tmp_path)


@pytest.fixture
def admin_cli(keyed_stack: KeyedStack, tmp_path: Path) -> Cli:
    return Cli(cli_env(keyed_stack.stack, keyed_stack.admin_key, tmp_path), tmp_path)
