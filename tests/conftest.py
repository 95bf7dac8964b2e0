"""Shared fixtures: real stacks of Conveyor processes, one per job store backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.stack import Stack, running_stack


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Gateway + ml/cmd/data workers on real RabbitMQ, with SQLite or PostgreSQL."""
    workdir: Path = tmp_path_factory.mktemp(f"stack-{request.param}")
    with running_stack(workdir, request.param) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as http:
        yield http
