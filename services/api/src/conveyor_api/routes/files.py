"""`/v1/files`: put input files (CSV, Parquet, JSON Lines) into the artifact store.

A file lands under `uploads/<key id>/<name>`; jobs name it as their `source`. A key may
read only its own uploads and its own jobs' artifacts (see JobService.check_source).
"""

from __future__ import annotations

from typing import Annotated

import anyio
from conveyor_core.artifacts import ARTIFACT_NAME_PATTERN, upload_path
from fastapi import APIRouter, Path, Request, status

from conveyor_api.auth import PrincipalDep
from conveyor_api.deps import ArtifactsDep
from conveyor_api.schemas import FileStored

router = APIRouter(prefix="/v1", tags=["files"])


@router.put(
    "/files/{name}",
    status_code=status.HTTP_201_CREATED,
    response_model=FileStored,
    responses={413: {"description": "Larger than CONVEYOR_MAX_UPLOAD_BYTES"}},
)
async def upload_file(
    name: Annotated[str, Path(pattern=ARTIFACT_NAME_PATTERN)],
    request: Request,
    artifacts: ArtifactsDep,
    caller: PrincipalDep,
) -> FileStored:
    """Store the raw request body as a file jobs can read (replaces one of the same name)."""
    path = upload_path(caller.owner, name)
    size = 0
    handle = await anyio.to_thread.run_sync(artifacts.open, path, "wb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            await anyio.to_thread.run_sync(handle.write, chunk)
    except BaseException:  # too large, or the client went away: keep no partial file
        await anyio.to_thread.run_sync(handle.close)
        await anyio.to_thread.run_sync(artifacts.remove, path)
        raise
    await anyio.to_thread.run_sync(handle.close)
    return FileStored(path=path, size=size)
