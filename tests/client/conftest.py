"""The Python client against a real gateway with API keys and real workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.clients import KeyedStack, keyed_stack


@pytest.fixture(scope="package")
def stack_with_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedStack]:
    # A small burst, so one test can run into the rate limit with its own key.
    with keyed_stack(
        tmp_path_factory.mktemp("client-stack"),
        CONVEYOR_SUBMIT_RATE_PER_S="5",
        CONVEYOR_SUBMIT_BURST="10",
    ) as running:
        yield running


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
