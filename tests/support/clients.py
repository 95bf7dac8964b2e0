"""For the client and CLI tests: a stack with API keys on, keys made the way an operator
makes them, and `conveyor` run as a user runs it."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.stack import VENV_BIN, Stack, running_stack


def api_keys(stack: Stack, *args: str) -> str:
    """`conveyor-api keys ARGS...` as an operator runs it; returns what it prints (`create`
    prints the new key's secret, once)."""
    result = subprocess.run(
        [str(VENV_BIN / "conveyor-api"), "keys", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


@dataclass
class KeyedStack:
    stack: Stack
    admin_key: str
    user_key: str


@contextlib.contextmanager
def keyed_stack(workdir: Path, **extra_env: str) -> Iterator[KeyedStack]:
    """Gateway + the three workers with API keys on, as in production, an admin key and an
    ordinary one. SQLite: the clients do not depend on the store's backend."""
    with running_stack(workdir, "sqlite", CONVEYOR_AUTH_ENABLED="true", **extra_env) as stack:
        admin_key = api_keys(stack, "create", "ops", "--admin")
        yield KeyedStack(stack, admin_key, api_keys(stack, "create", "user"))


# --- the `conveyor` command, run as a user runs it

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
        "NO_COLOR": "1",
    }
    env.pop("KUBECONFIG", None)
    if api_key:
        env["CONVEYOR_API_KEY"] = api_key
    return env
