"""The artifact store: files jobs read and write, kept out of the job rows.

Local directory by default, any fsspec URL (s3://, gs://) in production. Every path a
caller names is relative to the store's root and is checked before use
(`conveyor_core.artifact_paths`): no absolute paths, no `..`, no symlink that leads
outside the root.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from conveyor_core.artifact_paths import UnsafePathError, check_relative_path


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
