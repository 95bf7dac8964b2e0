"""One step of the gateway's maintenance loop, run against a real job store, no broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from conveyor_api.batching import BackgroundMarks
from conveyor_api.maintenance import Maintenance
from conveyor_api.publisher import JobPublisher
from conveyor_api.unit_of_work import open_work_runner
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs import JOB_TYPES
from conveyor_core.settings import Settings

T = TypeVar("T")


def run_maintenance(
    settings: Settings,
    step: Callable[[Maintenance], Awaitable[T]],
    artifacts: ArtifactStore | None = None,
) -> T:
    """`step(maintenance)` for a maintenance of `settings.database_url`; its result."""

    async def run() -> T:
        runner = open_work_runner(settings.database_url.get_secret_value())
        publisher = JobPublisher("amqp://unused", list(JOB_TYPES.values()), 1.0)

        async def unused(_: list[uuid.UUID]) -> None:
            raise AssertionError("this maintenance step writes no dispatch marks")

        maintenance = Maintenance(
            runner,
            publisher,
            BackgroundMarks(unused),
            artifacts or ArtifactStore(settings.artifact_root),
            settings,
        )
        try:
            return await step(maintenance)
        finally:
            await runner.close()

    return asyncio.run(run())
