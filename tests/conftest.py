"""Shared fixtures: real stacks of Conveyor processes and job stores, one per backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conveyor_core.store.migrate import upgrade_to_head
from support.stack import Stack, postgres_database, running_stack

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=BACKENDS)
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


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh job store, migrated to the latest schema: a SQLite file or a new database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        upgrade_to_head(url)
        yield url
    else:
        with postgres_database() as url:
            upgrade_to_head(url)
            yield url
