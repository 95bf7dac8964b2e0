"""The artifact store: files jobs read and write, kept out of the job rows.

Local directory by default, any fsspec URL (s3://, gs://) in production. Every path a
caller names is relative to the store's root and is checked before use: no absolute
paths, no `..`, no symlink that leads outside the root.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Annotated, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
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


class ArtifactStore:
    """Reads and writes files under one root, local or remote."""

    def __init__(self, root: str) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            self.fs.makedirs(self.root, exist_ok=True)
            self.root = posixpath.realpath(self.root)

    def url(self, path: str) -> str:
        """Full location of a checked relative path; for local stores, symlinks are resolved."""
        full = posixpath.join(self.root, check_relative_path(path))
        if self.is_local:
            real = posixpath.realpath(full)
            if real != self.root and not real.startswith(self.root + "/"):
                raise UnsafePathError(f"path {path!r} leads outside the artifact store")
            return real
        return f"{self.fs.unstrip_protocol(full)}"

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        target = self.url(path)
        if "w" in mode:
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        return self.fs.open(target, mode)  # type: ignore[no-any-return]

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self.url(path)))

    def remove(self, path: str) -> None:
        target = self.url(path)
        if self.fs.exists(target):
            self.fs.rm(target)

    def remove_folder(self, path: str) -> None:
        """Delete a folder and everything in it (nothing if it does not exist)."""
        target = self.url(path)
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)

    def size(self, path: str) -> int:
        return int(self.fs.size(self.url(path)))

    @property
    def storage_options(self) -> dict[str, Any]:
        """What polars/pyarrow need to reach a remote store (empty for local)."""
        return {} if self.is_local else dict(self.fs.storage_options)

    def move(self, source: str, target: str) -> None:
        """Put `source` in `target`'s place: a rename on a local disk, so a reader sees the
        old file or the new one, never half of one (an object store's PUT is whole anyway)."""
        self.fs.mv(self.url(source), self.url(target))

    def files(self, folder: str) -> list[StoredFile]:
        """Every file below `folder` (none if it does not exist), with size and age."""
        target = self.url(folder)
        if not self.fs.exists(target):
            return []
        found = self.fs.find(target, detail=True)
        prefix = self.root.rstrip("/") + "/"
        stored = []
        for full, info in found.items():
            relative = full[len(prefix) :] if full.startswith(prefix) else full
            stored.append(StoredFile(relative, int(info.get("size") or 0), _modified(info)))
        return stored


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the store's root
    size: int
    modified: datetime


def _modified(info: dict[str, Any]) -> datetime:
    # A local disk reports `mtime` (seconds); S3 and GCS a `LastModified`/`updated` datetime.
    if "mtime" in info:
        return datetime.fromtimestamp(float(info["mtime"]), UTC)
    for key in ("LastModified", "last_modified", "updated"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, str):
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.now(UTC)  # unknown age: never expired by mistake


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
