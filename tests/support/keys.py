"""A stack with API keys on, and keys made the way an operator makes them."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.stack import VENV_BIN, Stack, running_stack


def create_key(stack: Stack, name: str, *flags: str) -> str:
    """`conveyor-api keys create NAME [--admin]`; returns the secret it prints once."""
    result = subprocess.run(
        [str(VENV_BIN / "conveyor-api"), "keys", "create", name, *flags],
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
        yield KeyedStack(stack, create_key(stack, "ops", "--admin"), create_key(stack, "user"))
