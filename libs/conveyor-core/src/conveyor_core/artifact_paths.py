"""Where things live in the artifact store, and which paths callers may name.

Pure rules, no I/O: the job types' parameter models (the contract) use `ArtifactPath`, and
the contract needs only pydantic. The store that reads and writes is `conveyor_core.artifacts`.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from typing import Annotated

from pydantic import AfterValidator, Field

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]{0,127}$")
ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class UnsafePathError(ValueError):
    """A path that would reach outside the artifact store."""


def check_relative_path(path: str) -> str:
    """Return `path` if it is a plain relative path inside the store, else raise."""
    if not path or len(path) > 512:
        raise UnsafePathError("path must be 1 to 512 characters")
    if path.startswith("/") or "\\" in path or "\x00" in path or "://" in path:
        raise UnsafePathError(f"path {path!r} must be relative to the artifact store")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise UnsafePathError(f"path {path!r} has an empty, '.' or '..' segment")
        if not _SEGMENT.match(segment):
            raise UnsafePathError(
                f"path segment {segment!r} has characters outside [A-Za-z0-9_.=-]"
            )
    return path


ArtifactPath = Annotated[
    str,
    AfterValidator(check_relative_path),
    Field(
        description="Path relative to the artifact store root, e.g. `uploads/sales.parquet` "
        "or `jobs/<id>/output.parquet`. Absolute paths and `..` are refused.",
        examples=["uploads/sales.parquet"],
    ),
]


def upload_path(owner: str, name: str) -> str:
    """Where a caller's uploaded file lives: under a folder of its own key."""
    if not re.match(ARTIFACT_NAME_PATTERN, name):
        raise UnsafePathError(f"file name {name!r} is not a plain file name")
    return f"{uploads_folder(owner)}/{name}"


def uploads_folder(owner: str) -> str:
    """The folder of one key's uploads."""
    return f"uploads/{owner or 'local'}"


# An upload is written here first, then moved over its name. Never a caller's name: those
# start with a letter or digit (ARTIFACT_NAME_PATTERN).
PARTIAL_UPLOAD_PREFIX = "_partial-"


def is_partial_upload(path: str) -> bool:
    """An upload still being written (or left by a gateway that died writing it)."""
    return posixpath.basename(path).startswith(PARTIAL_UPLOAD_PREFIX)


def job_artifact_folder(job_id: object) -> str:
    """The folder holding every output of one job, of all its attempts."""
    return f"jobs/{job_id}"


def attempt_artifact_folder(job_id: object, attempt: int | None) -> str:
    """The folder one run of a job writes to.

    Each attempt has its own, so a superseded run (paused, cut off, then resumed) cannot
    overwrite the files of the run that recorded the job's outcome. None is the layout of
    jobs finished before attempts had folders: their files sit in the job's folder.
    """
    if attempt is None:
        return job_artifact_folder(job_id)
    return f"{job_artifact_folder(job_id)}/attempt-{attempt}"


def job_artifact_path(job_id: object, name: str, attempt: int | None) -> str:
    """Where an attempt's named output lives inside the store."""
    if not re.match(ARTIFACT_NAME_PATTERN, name):
        raise UnsafePathError(f"artifact name {name!r} is not a plain file name")
    return f"{attempt_artifact_folder(job_id, attempt)}/{name}"


def job_artifact_reference(path: str) -> tuple[uuid.UUID, str] | None:
    """The job and artifact name a source path like `jobs/<id>/output.parquet` names.

    That is the address callers use for a job's output; the file itself is in the folder of
    the attempt that produced it, found through the job's row. None for any other path.
    """
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "jobs" or not re.match(ARTIFACT_NAME_PATTERN, parts[2]):
        return None
    try:
        return uuid.UUID(parts[1]), parts[2]
    except ValueError:
        return None
