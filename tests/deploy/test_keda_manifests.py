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


def test_one_scaled_object_per_job_type_on_its_queue_counting_unacked():
    objects = [o for p in GENERATED for o in load_manifests(p)]
    scaled = {
        o["spec"]["triggers"][0]["metadata"]["queueName"]: o
        for o in objects
        if o["kind"] == "ScaledObject"
    }
    assert set(scaled) == {job.queue for job in JOB_TYPES.values()}
    auth = {o["metadata"]["name"] for o in objects if o["kind"] == "TriggerAuthentication"}
    for queue, obj in scaled.items():
        trigger = obj["spec"]["triggers"][0]
        assert trigger["metadata"]["protocol"] == "http"
        assert trigger["metadata"].get("excludeUnacknowledged", "false") == "false"
        assert trigger["authenticationRef"]["name"] in auth
        assert obj["spec"]["scaleTargetRef"]["name"].startswith("conveyor-worker-"), queue
