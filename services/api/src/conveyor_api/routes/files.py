"""`/v1/files`: put input files (CSV, Parquet, JSON Lines) into the artifact store.

A file lands under `uploads/<key id>/<name>`; jobs name it as their `source`. A key may
read only its own uploads and its own jobs' artifacts (see JobService.check_inputs).
Each key's uploads are bounded in count and bytes, and the maintenance loop deletes
those not written for CONVEYOR_UPLOAD_RETENTION_S.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated

import anyio
from conveyor_core.artifact_paths import (
    ARTIFACT_NAME_PATTERN,
    PARTIAL_UPLOAD_PREFIX,
    is_partial_upload,
    upload_path,
    uploads_folder,
)
from conveyor_core.artifacts import ArtifactStore, StoredFile
from conveyor_core.settings import Settings
from fastapi import APIRouter, HTTPException, Path, Request, status

from conveyor_api.auth import PrincipalDep
from conveyor_api.deps import ArtifactsDep, SettingsDep
from conveyor_api.schemas import FileStored

router = APIRouter(prefix="/v1", tags=["files"])


@router.put(
    "/files/{name}",
    status_code=status.HTTP_201_CREATED,
    response_model=FileStored,
    responses={
        413: {"description": "Larger than CONVEYOR_MAX_UPLOAD_BYTES, or the key's upload quota"},
        422: {"description": "An empty body"},
    },
)
async def upload_file(
    name: Annotated[str, Path(pattern=ARTIFACT_NAME_PATTERN)],
    request: Request,
    artifacts: ArtifactsDep,
    settings: SettingsDep,
    caller: PrincipalDep,
) -> FileStored:
    """Store the raw request body as a file jobs can read (replaces one of the same name).

    The body is written under a temporary name and moved over `name` once complete, so a
    job reading the file meanwhile sees the old file or the new one, and a failed upload
    leaves the old one in place.
    """
    path = upload_path(caller.owner, name)
    folder = uploads_folder(caller.owner)
    room = _room(await anyio.to_thread.run_sync(artifacts.files, folder), path, settings)
    partial = f"{folder}/{PARTIAL_UPLOAD_PREFIX}{uuid.uuid4().hex}"
    size = 0
    handle = await anyio.to_thread.run_sync(artifacts.open, partial, "wb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > room:
                raise _quota_exceeded(
                    f"this upload would take the key's uploads past "
                    f"{settings.max_upload_bytes_per_key} bytes (CONVEYOR_MAX_UPLOAD_BYTES_PER_KEY)"
                )
            await anyio.to_thread.run_sync(handle.write, chunk)
        await anyio.to_thread.run_sync(handle.close)
        if size == 0:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "the upload is empty: send the file's bytes as the request body "
                "(curl --data-binary @file; a missing file sends nothing)",
            )
        await anyio.to_thread.run_sync(artifacts.move, partial, path)
    except BaseException:  # too large, empty, or the client went away: the old file stays
        await anyio.to_thread.run_sync(handle.close)
        await anyio.to_thread.run_sync(_remove_quietly, artifacts, partial)
        raise
    return FileStored(path=path, size=size)


def _room(stored: list[StoredFile], path: str, settings: Settings) -> int:
    """Bytes this upload may take within the key's quota; 413 if it may not be stored."""
    kept = [file for file in stored if not is_partial_upload(file.path)]
    replacing = [file for file in kept if file.path == path]
    if not replacing and len(kept) >= settings.max_uploads_per_key:
        raise _quota_exceeded(
            f"this key keeps {len(kept)} uploads, the most it may "
            "(CONVEYOR_MAX_UPLOADS_PER_KEY): replace one, or wait for retention"
        )
    taken = sum(file.size for file in kept) - sum(file.size for file in replacing)
    return settings.max_upload_bytes_per_key - taken


def _quota_exceeded(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail)


def _remove_quietly(artifacts: ArtifactStore, path: str) -> None:
    with contextlib.suppress(OSError):  # the maintenance loop sweeps leftover partial uploads
        artifacts.remove(path)
