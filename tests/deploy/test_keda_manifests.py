"""deploy/keda/: plain KEDA manifests for kubectl users, generated from the chart."""

from __future__ import annotations

import os
import subprocess

import pytest
from chart_support import KEDA_DIR, REPO, load_manifests, tool, validate
from conveyor_core.jobs import JOB_TYPES

FILES = sorted(KEDA_DIR.glob("*.yaml"))
GENERATED = [p for p in FILES if p.name != "values.yaml"]


def test_manifests_match_the_chart(tmp_path):
    """`make keda-manifests` regenerates them; a difference means someone forgot to."""
    helm = tool("helm")
    subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-f",
            "deploy/deploy.mk",
            "keda-manifests",
            f"KEDA_DIR={tmp_path}",
            f"HELM={helm}",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    fresh = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert fresh == [p.name for p in GENERATED]
    for path in GENERATED:
        assert (tmp_path / path.name).read_text() == path.read_text(), (
            f"{path.relative_to(REPO)} drifted from the chart: run `make keda-manifests`"
        )


@pytest.mark.parametrize("path", GENERATED, ids=lambda p: p.name)
def test_manifests_match_the_keda_crds(path):
    objects = load_manifests(path)
    assert objects
    for obj in objects:
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        validate(obj)


def test_one_scaled_object_per_job_type_counting_its_queued_and_running_jobs():
    objects = [o for p in GENERATED for o in load_manifests(p)]
    scaled = {
        o["spec"]["scaleTargetRef"]["name"].removeprefix("conveyor-worker-"): o
        for o in objects
        if o["kind"] == "ScaledObject"
    }
    assert {f"{name}.{kind}" for name, kind in _types_of(scaled)} == set(JOB_TYPES)
    auth = {o["metadata"]["name"] for o in objects if o["kind"] == "TriggerAuthentication"}
    for obj in scaled.values():
        trigger = obj["spec"]["triggers"][0]
        assert trigger["type"] == "postgresql"
        assert "state IN ('queued', 'running')" in trigger["metadata"]["query"]
        assert trigger["authenticationRef"]["name"] in auth


def _types_of(scaled: dict[str, dict]) -> list[tuple[str, str]]:
    """(worker, job kind) of each ScaledObject, read from the type its query counts."""
    found = []
    for name, obj in scaled.items():
        query = obj["spec"]["triggers"][0]["metadata"]["query"]
        job_type = query.split("type = '")[1].split("'")[0]
        assert job_type.startswith(f"{name}."), (name, job_type)
        found.append((name, job_type.removeprefix(f"{name}.")))
    return found
