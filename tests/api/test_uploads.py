"""Uploads (PUT /v1/files): replaced whole, bounded per key, deleted after retention."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.settings import Settings
from support.maintenance import run_maintenance
from support.stack import Stack, running_stack

DAY = 24 * 3600


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with running_stack(
        tmp_path_factory.mktemp("uploads"),
        "sqlite",
        workers=(),
        CONVEYOR_MAX_UPLOAD_BYTES="1000",
        CONVEYOR_MAX_UPLOADS_PER_KEY="3",
        CONVEYOR_MAX_UPLOAD_BYTES_PER_KEY="2000",
    ) as running:
        yield running


def uploads_dir(stack: Stack) -> Path:
    return stack.workdir / "artifacts" / "uploads" / "local"  # auth off: the anonymous key


def put(client: httpx.Client, name: str, body: bytes) -> httpx.Response:
    return client.put(f"/v1/files/{name}", content=body)


def test_a_failed_reupload_leaves_the_good_file_in_place(stack: Stack):
    with stack.client() as client:
        assert put(client, "good.csv", b"a,b\n1,2\n").status_code == 201
        assert put(client, "good.csv", b"x" * 1001).status_code == 413  # over the file limit
        assert put(client, "good.csv", b"").status_code == 422
    assert (uploads_dir(stack) / "good.csv").read_bytes() == b"a,b\n1,2\n"
    assert sorted(p.name for p in uploads_dir(stack).iterdir()) == ["good.csv"]  # no partial


def test_an_empty_upload_is_refused_saying_why(stack: Stack):
    with stack.client() as client:
        response = put(client, "empty.csv", b"")
    assert response.status_code == 422
    assert "the upload is empty" in response.json()["detail"]
    assert not (uploads_dir(stack) / "empty.csv").exists()


def test_a_key_keeps_a_bounded_number_of_uploads_and_bytes(stack: Stack):
    for leftover in uploads_dir(stack).iterdir():
        leftover.unlink()
    with stack.client() as client:
        for name in ("one.csv", "two.csv"):
            assert put(client, name, b"x" * 900).status_code == 201
        # 1,800 of 2,000 bytes taken: 300 more do not fit, 200 do.
        over = put(client, "three.csv", b"x" * 300)
        assert over.status_code == 413
        assert "CONVEYOR_MAX_UPLOAD_BYTES_PER_KEY" in over.json()["detail"]
        assert put(client, "three.csv", b"x" * 200).status_code == 201
        # Three files, the most: a fourth name is refused, replacing one is not.
        fourth = put(client, "four.csv", b"x")
        assert fourth.status_code == 413
        assert "CONVEYOR_MAX_UPLOADS_PER_KEY" in fourth.json()["detail"]
        # 2,000 of 2,000 bytes taken, yet one.csv may be replaced: its old 900 do not count.
        assert put(client, "one.csv", b"y" * 900).status_code == 201
    assert (uploads_dir(stack) / "one.csv").read_bytes() == b"y" * 900


def test_uploads_not_written_for_the_retention_period_are_deleted(tmp_path: Path):
    store = ArtifactStore(str(tmp_path / "artifacts"))
    for path in ("uploads/k1/old.csv", "uploads/k1/new.csv", "uploads/k2/_partial-abc"):
        with store.open(path, "wb") as handle:
            handle.write(b"1,2\n")
    week_ago = time.time() - 8 * DAY
    os.utime(store.url("uploads/k1/old.csv"), (week_ago, week_ago))
    hours_ago = time.time() - 2 * 3600
    os.utime(store.url("uploads/k2/_partial-abc"), (hours_ago, hours_ago))  # a dead upload
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'jobs.db'}", upload_retention_s=7 * DAY
    )
    assert run_maintenance(settings, lambda m: m.prune_uploads(), store) == 2
    assert [f.path for f in store.files("uploads")] == ["uploads/k1/new.csv"]
    keep_forever = Settings(database_url=settings.database_url, upload_retention_s=0)
    os.utime(store.url("uploads/k1/new.csv"), (week_ago, week_ago))
    assert run_maintenance(keep_forever, lambda m: m.prune_uploads(), store) == 0
