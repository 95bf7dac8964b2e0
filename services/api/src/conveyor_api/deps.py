"""What handlers depend on, as Annotated aliases: a signature tells what a handler touches.

The providers are `async def` although they do not await: FastAPI runs a plain `def`
dependency in its thread pool, a thread hop per dependency per request.

The two hot routes (routes/jobs.py: the plain-ASGI `submit` and `poll`, and the `accept`
and `job_state` they share with the FastAPI routes) call `job_service(request)` and
`app_settings(request)` instead: FastAPI resolves each dependency with some eighty Python
calls of bookkeeping per request, more than the handler's own work for a status poll.
"""

from __future__ import annotations

from typing import Annotated

from conveyor_core.artifacts import ArtifactStore
from conveyor_core.settings import Settings
from fastapi import Depends, Request

from conveyor_api.event_hub import EventHub
from conveyor_api.event_stream import JobEventStream
from conveyor_api.publisher import JobPublisher
from conveyor_api.service import JobService


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def job_service(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


async def get_settings(request: Request) -> Settings:
    return app_settings(request)


async def get_jobs(request: Request) -> JobService:
    return job_service(request)


async def get_artifacts(request: Request) -> ArtifactStore:
    artifacts: ArtifactStore = request.app.state.artifacts
    return artifacts


async def get_event_hub(request: Request) -> EventHub:
    hub: EventHub = request.app.state.event_hub
    return hub


async def get_event_streams(request: Request) -> JobEventStream:
    streams: JobEventStream = request.app.state.event_streams
    return streams


async def get_publisher(request: Request) -> JobPublisher:
    publisher: JobPublisher = request.app.state.publisher
    return publisher


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
EventHubDep = Annotated[EventHub, Depends(get_event_hub)]
EventStreamDep = Annotated[JobEventStream, Depends(get_event_streams)]
PublisherDep = Annotated[JobPublisher, Depends(get_publisher)]
