"""The `conveyor` command run as a user runs it: a subprocess against a real stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conveyor_core.settings import DEFAULT_COMMAND_CATALOG
from support.clients import Cli, KeyedStack, cli_env
from support.clients import keyed_stack as start_keyed_stack

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
