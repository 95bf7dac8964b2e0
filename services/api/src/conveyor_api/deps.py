"""What handlers depend on, as Annotated aliases: a signature tells what a handler touches."""

from __future__ import annotations

from typing import Annotated

from conveyor_core.artifacts import ArtifactStore
from conveyor_core.settings import Settings
from fastapi import Depends, Request

from conveyor_api.service import JobService


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_jobs(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


def get_artifacts(request: Request) -> ArtifactStore:
    artifacts: ArtifactStore = request.app.state.artifacts
    return artifacts


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
