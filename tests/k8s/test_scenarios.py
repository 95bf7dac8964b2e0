"""The Helm chart on a real control plane, its pods run as local processes (kubelet.py).

One module-wide install: a fresh RabbitMQ vhost and PostgreSQL database, a namespace with
PodSecurity `restricted` enforced, the connection Secret of docs/deploy.md, then `helm
install` (no --wait; helm waits for the migration hook Job). Tests run in file order and the
last one uninstalls.

Run with:  CONVEYOR_K8S=1 pytest tests/k8s -q
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from controlplane import ControlPlane, control_plane
from kubelet import ProcessKubelet, process_kubelet
from release import (
    CHART,
    connection_secret,
    create_api_key,
    get_json,
    helm,
    queue_exists,
    queue_messages,
    release_objects,
    restricted_namespace,
)
from support.stack import postgres_database, rabbitmq_vhost

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("CONVEYOR_K8S") != "1", reason="set CONVEYOR_K8S=1 to run the control plane"
    ),
    pytest.mark.timeout(600),
]

NAMESPACE = "conveyor"
RELEASE = "conveyor"  # fullname == release name: objects are conveyor-api, conveyor-worker-cmd
SECRET = "conveyor-connections"
CMD_CONCURRENCY = 2  # jobsPerReplica defaults to it: the ScaledObject's target value
BURST = 6  # cmd.run jobs submitted at once in S2/S3
SLEEP_S = 25


@dataclass
class Release:
    cp: ControlPlane
    kubelet: ProcessKubelet
    vhost: str
    db_url: str
    workdir: Path
    install_s: float
    api_key: str = ""

    def logs(self) -> str:
        return self.kubelet.logs(tail=2000) + f"\nkubelet errors: {self.kubelet.errors}"

    def wait(self, what: str, check: Any, timeout: float = 90) -> None:
        """Poll `check` until true, failing with the pods' logs."""
        deadline = time.monotonic() + timeout
        while not _quiet(check):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s: {what}\n{self.logs()}")
            time.sleep(0.5)

    def gateway(self) -> httpx.Client:
        """A client of one ready gateway pod (the Service has no proxy here)."""
        pod = next(
            p
            for p in self.kubelet.snapshot()
            if p.name.startswith(f"{RELEASE}-api-") and p.ready and not p.kill_at
        )
        return httpx.Client(
            base_url=f"http://127.0.0.1:{pod.ports['http']}",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )


def _quiet(check: Any) -> bool:
    with contextlib.suppress(Exception):
        return bool(check())
    return False


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    workdir = tmp_path_factory.mktemp("k8s-scenarios")
    with contextlib.ExitStack() as stack:
        vhost = stack.enter_context(rabbitmq_vhost())
        db_url = stack.enter_context(postgres_database())
        cp = stack.enter_context(control_plane())
        restricted_namespace(cp, NAMESPACE)
        connection_secret(cp, NAMESPACE, SECRET, vhost, db_url)
        kubelet = stack.enter_context(
            process_kubelet(
                cp, NAMESPACE, workdir / "pods", selector=f"app.kubernetes.io/instance={RELEASE}"
            )
        )
        artifacts = workdir / "artifacts"  # the "bucket" every pod shares
        artifacts.mkdir()
        values = [
            f"secrets.existingSecret={SECRET}",
            # artifacts.url must be a URL (validation.yaml): fsspec's file:// is one, and every
            # local process sees it, as every pod would see a bucket.
            f"artifacts.url=file://{artifacts}",
            "workers.data.enabled=false",  # S7
            f"workers.cmd.concurrency={CMD_CONCURRENCY}",
            "workers.cmd.keda.pollingInterval=2",
            "workers.ml.keda.pollingInterval=2",
        ]
        t0 = time.monotonic()
        try:
            helm(
                cp,
                "install",
                RELEASE,
                str(CHART),
                "-n",
                NAMESPACE,
                "--timeout",
                "5m",
                *(arg for value in values for arg in ("--set", value)),
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{kubelet.logs()}") from None
        running = Release(cp, kubelet, vhost, db_url, workdir, time.monotonic() - t0)
        running.api_key = create_api_key(db_url, workdir)
        yield running
        with contextlib.suppress(AssertionError):  # the last test uninstalls
            helm(cp, "uninstall", RELEASE, "-n", NAMESPACE, "--timeout", "2m")


# --- S1: install, hook, admission, helm test ------------------------------------------


def test_s1_install_runs_the_migration_hook_and_admits_every_object(release: Release) -> None:
    cp = release.cp
    status = json.loads(helm(cp, "status", RELEASE, "-n", NAMESPACE, "-o", "json"))
    assert status["info"]["status"] == "deployed"
    hooks = {hook["name"]: hook["last_run"]["phase"] for hook in status.get("hooks", [])}
    assert hooks.get(f"{RELEASE}-migrate") == "Succeeded", hooks
    # The hook's pod ran `conveyor-api migrate` as a local process, and it succeeded.
    migrate = [p for p in release.kubelet.snapshot() if p.name.startswith(f"{RELEASE}-migrate")]
    assert migrate and migrate[0].argv[-1] == "migrate" and migrate[0].exit_code == 0

    # Every object of the manifest exists: the API server (PodSecurity included) took them.
    manifest = helm(cp, "get", "manifest", RELEASE, "-n", NAMESPACE)
    got = cp.kubectl("get", "-f", "-", "-o", "name", input=manifest).stdout.split()
    kinds = sorted({name.split("/")[0] for name in got})
    assert {"deployment.apps", "scaledobject.keda.sh", "configmap"} <= set(kinds), kinds

    # The pods of the gateway Deployment are admitted under `restricted` and become Ready.
    def api_available() -> bool:
        deploy = get_json(cp, "deploy", f"{RELEASE}-api", "-n", NAMESPACE)
        return bool(deploy["status"].get("availableReplicas", 0) == deploy["spec"]["replicas"])

    release.wait("gateway Deployment available", api_available, timeout=120)
    # The uninstall test's listing sees the release (HPAs made by KEDA carry its labels too).
    objects = release_objects(cp, NAMESPACE, RELEASE)
    assert any(name.startswith("pod/") for name in objects), objects
    print(f"helm install (hook included) took {release.install_s:.1f}s; objects: {kinds}")


def test_s1_helm_test_passes(release: Release) -> None:
    # The test pod's `python -c` requests http://conveyor-api:80/readyz; the kubelet rewrites
    # that Service URL to a ready gateway process's local port (no DNS, no kube-proxy here).
    out = helm(release.cp, "test", RELEASE, "-n", NAMESPACE, "--timeout", "2m")
    assert "Succeeded" in out, out
    pod = release.kubelet.by_name(f"{RELEASE}-test-connection")
    assert pod.exit_code == 0 and '"status":"ok"' in pod.log().replace(" ", ""), pod.log()


# --- S7: a disabled worker type --------------------------------------------------------


def test_s7_disabled_worker_has_no_hpa_and_its_queue_exists(release: Release) -> None:
    cp = release.cp
    release.wait(
        "KEDA's HPAs",
        lambda: len(get_json(cp, "hpa", "-n", NAMESPACE)["items"]) == 2,
    )
    hpas = {item["metadata"]["name"] for item in get_json(cp, "hpa", "-n", NAMESPACE)["items"]}
    assert hpas == {f"{RELEASE}-worker-ml", f"{RELEASE}-worker-cmd"}, hpas
    assert cp.kubectl(
        "get", "deploy", f"{RELEASE}-worker-data", "-n", NAMESPACE, check=False
    ).returncode
    # The gateway declares every job type's queue, so jobs wait for a worker to be enabled.
    release.wait(
        "conveyor.data.transform declared",
        lambda: queue_exists(release.vhost, "conveyor.data.transform"),
    )


# --- S2 + S3: a burst of cmd.run jobs with the cmd workers at zero ---------------------


def _replicas(cp: ControlPlane, name: str) -> int:
    return int(get_json(cp, "deploy", name, "-n", NAMESPACE)["spec"].get("replicas", 0))


@pytest.fixture(scope="module")
def burst(release: Release) -> list[str]:
    """BURST `sleep` jobs submitted through the gateway while the cmd workers are at 0."""
    cmd = f"{RELEASE}-worker-cmd"
    # KEDA scales the Deployment (created with 1 replica) to 0: its queue is empty.
    release.wait(f"{cmd} scaled to 0", lambda: _replicas(release.cp, cmd) == 0, timeout=120)
    release.wait(
        "no cmd worker process left",
        lambda: (
            not any(
                p.name.startswith(cmd) and p.process and p.process.poll() is None
                for p in release.kubelet.snapshot()
            )
        ),
    )
    with release.gateway() as client:
        ids = []
        for _ in range(BURST):
            body = {"type": "cmd.run", "params": {"command": "sleep", "args": [str(SLEEP_S)]}}
            response = client.post("/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
    return ids


def test_s2_keda_external_metric_matches_rabbitmq(release: Release, burst: list[str]) -> None:
    cp = release.cp
    hpa = get_json(cp, "hpa", f"{RELEASE}-worker-cmd", "-n", NAMESPACE)
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-worker-cmd"
    metric = hpa["spec"]["metrics"][0]["external"]
    target = metric["target"]
    assert target == {"type": "AverageValue", "averageValue": str(CMD_CONCURRENCY)}, target
    selector = urllib.parse.quote(f"scaledobject.keda.sh/name={RELEASE}-worker-cmd", safe="")
    path = (
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/"
        f"{metric['metric']['name']}?labelSelector={selector}"
    )
    seen: list[tuple[str, int]] = []

    def matches() -> bool:
        items = json.loads(cp.kubectl("get", "--raw", path).stdout)["items"]
        value, rabbit = items[0]["value"], queue_messages(release.vhost, "conveyor.cmd.run")
        seen.append((value, rabbit))
        return bool(value == str(rabbit) == str(BURST))

    try:
        release.wait(f"external metric == RabbitMQ's count == {BURST}", matches, timeout=60)
    except AssertionError as error:
        raise AssertionError(f"(metric, rabbitmq) seen: {seen[-10:]}\n{error}") from None


def test_s3_scale_from_zero_runs_the_burst_concurrently(release: Release, burst: list[str]) -> None:
    cp = release.cp
    cmd = f"{RELEASE}-worker-cmd"
    want = min(10, math.ceil(BURST / CMD_CONCURRENCY))
    release.wait(f"{cmd} scaled to {want}", lambda: _replicas(cp, cmd) == want, timeout=90)

    jobs: dict[str, dict[str, Any]] = {}

    def all_finished() -> bool:
        with release.gateway() as client:
            for job_id in burst:
                jobs[job_id] = client.get(f"/v1/jobs/{job_id}").json()
        return all(job["state"] in ("succeeded", "failed", "cancelled") for job in jobs.values())

    release.wait("the burst finished", all_finished, timeout=SLEEP_S * 4 + 60)
    assert all(job["state"] == "succeeded" for job in jobs.values()), jobs
    # More jobs ran at once than one pod's pool holds: several worker pods shared the burst.
    spans = [
        (datetime.fromisoformat(j["started_at"]), datetime.fromisoformat(j["finished_at"]))
        for j in jobs.values()
    ]
    overlap = max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)
    assert overlap > CMD_CONCURRENCY, (overlap, spans)
    running = [p for p in release.kubelet.snapshot() if p.name.startswith(cmd) and p.process]
    assert len(running) >= want


# --- S4: helm upgrade to a ScaledJob: one Kubernetes Job per queued job ---------------


def test_s4_upgrade_to_scaledjob_runs_one_job_per_pod(release: Release) -> None:
    cp = release.cp
    ml = f"{RELEASE}-worker-ml"
    # The pre-upgrade hook (migrations) runs again, as a new Job the kubelet runs.
    helm(
        cp, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values", "--timeout", "5m",
        "--set", "workers.ml.keda.kind=ScaledJob",
    )  # fmt: skip
    assert cp.kubectl("get", "scaledjob", ml, "-n", NAMESPACE, check=False).returncode == 0
    release.wait(
        f"Deployment {ml} removed",
        lambda: cp.kubectl("get", "deploy", ml, "-n", NAMESPACE, check=False).returncode != 0,
    )
    body = {"type": "ml.train", "params": {"dataset": "iris", "model": "logistic_regression"}}
    with release.gateway() as client:
        ids = [client.post("/v1/jobs", json=body).json()["id"] for _ in range(2)]
    jobs: dict[str, dict[str, Any]] = {}

    def all_finished() -> bool:
        with release.gateway() as client:
            for job_id in ids:
                jobs[job_id] = client.get(f"/v1/jobs/{job_id}").json()
        return all(job["state"] in ("succeeded", "failed", "cancelled") for job in jobs.values())

    release.wait("both ml.train jobs finished", all_finished, timeout=240)
    assert all(job["state"] == "succeeded" for job in jobs.values()), jobs
    with release.gateway() as client:  # the model is in the store every pod shares
        for job_id in ids:
            model = client.get(f"/v1/jobs/{job_id}/artifacts/model.skops")
            assert model.status_code == 200 and len(model.content) > 1000

    # Each job ran in a pod of its own that exited 0 after it (CONVEYOR_WORKER_MAX_JOBS=1),
    # so its Kubernetes Job completed.
    def two_jobs_complete() -> bool:
        items = get_json(cp, "jobs", "-n", NAMESPACE, "-l", f"scaledjob.keda.sh/name={ml}")
        return sum(1 for job in items["items"] if job["status"].get("succeeded") == 1) >= 2

    release.wait("two completed Jobs of the ScaledJob", two_jobs_complete, timeout=90)


# --- S1 (end): uninstall ---------------------------------------------------------------


def test_s1_uninstall_leaves_no_object_behind(release: Release) -> None:
    cp = release.cp
    helm(cp, "uninstall", RELEASE, "-n", NAMESPACE, "--timeout", "2m")
    release.wait(
        "no object labelled with the release",
        lambda: release_objects(cp, NAMESPACE, RELEASE) == [],
        timeout=150,
    )
    alive = [p.name for p in release.kubelet.snapshot() if p.process and p.process.poll() is None]
    assert alive == [], alive
    # Every long-running pod stopped on SIGTERM (Celery's warm shutdown, uvicorn's graceful
    # one) within its grace period: none needed SIGKILL. Celery exits 0; uvicorn re-raises
    # the SIGTERM it handled once shut down (exit code 143 in a container).
    stopped = [p for p in release.kubelet.snapshot() if p.kill_at is not None]
    assert stopped, "no pod went through a graceful deletion"
    codes = {p.name: (p.sigkilled, p.process.returncode if p.process else None) for p in stopped}
    clean = (0, -signal.SIGTERM)
    assert all(not killed and code in clean for killed, code in codes.values()), codes
    assert release.kubelet.errors == [], release.kubelet.errors
