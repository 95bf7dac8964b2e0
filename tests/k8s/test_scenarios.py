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
import subprocess
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
HANDOVER_S = 4  # config.ack_handover_after_s: jobs longer than this have their message acked
LONG_S = 40  # S4's long jobs: ten times the hand-over
COOLDOWN_S = 10  # S5: seconds at zero queued and running jobs before the last pod goes


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
            f"config.ack_handover_after_s={HANDOVER_S}",
            "workers.cmd.keda.pollingInterval=2",
            "workers.ml.keda.pollingInterval=2",
            f"workers.cmd.keda.cooldownPeriod={COOLDOWN_S}",
            f"workers.ml.keda.cooldownPeriod={COOLDOWN_S}",
            # Scale-in as fast as the HPA allows: a metric that dropped a busy pod's job
            # would show within seconds (S4), not after the default ten-minute window.
            "workers.cmd.keda.scaleDown.stabilizationWindowSeconds=0",
            "workers.cmd.keda.scaleDown.periodSeconds=5",
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


def _external_metric(release: Release, scaled_object: str) -> int:
    """The value KEDA's metrics adapter serves the HPA of `scaled_object`, read as the HPA
    controller reads it: through the API server's external metrics API."""
    hpa = get_json(release.cp, "hpa", scaled_object, "-n", NAMESPACE)
    name = hpa["spec"]["metrics"][0]["external"]["metric"]["name"]
    selector = urllib.parse.quote(f"scaledobject.keda.sh/name={scaled_object}", safe="")
    path = (
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/{name}"
        f"?labelSelector={selector}"
    )
    items = json.loads(release.cp.kubectl("get", "--raw", path).stdout)["items"]
    return int(items[0]["value"])


def test_s2_keda_external_metric_matches_rabbitmq(release: Release, burst: list[str]) -> None:
    cp = release.cp
    hpa = get_json(cp, "hpa", f"{RELEASE}-worker-cmd", "-n", NAMESPACE)
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-worker-cmd"
    metric = hpa["spec"]["metrics"][0]["external"]
    target = metric["target"]
    assert target == {"type": "AverageValue", "averageValue": str(CMD_CONCURRENCY)}, target
    seen: list[tuple[int, int]] = []

    def matches() -> bool:
        # Before a worker starts, the job store's queued + running count (the trigger) and
        # RabbitMQ's ready + unacked count are the same jobs.
        value = _external_metric(release, f"{RELEASE}-worker-cmd")
        rabbit = queue_messages(release.vhost, "conveyor.cmd.run")
        seen.append((value, rabbit))
        return value == rabbit == BURST

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


def _jobs(release: Release, ids: list[str]) -> dict[str, dict[str, Any]]:
    with release.gateway() as client:
        return {job_id: client.get(f"/v1/jobs/{job_id}").json() for job_id in ids}


def _submit(release: Release, job_type: str, params: dict[str, Any], count: int) -> list[str]:
    with release.gateway() as client:
        ids = []
        for _ in range(count):
            response = client.post("/v1/jobs", json={"type": job_type, "params": params})
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
    return ids


def _cmd_pods(release: Release) -> list[Any]:
    return [p for p in release.kubelet.snapshot() if p.name.startswith(f"{RELEASE}-worker-cmd")]


# --- S5: back to zero after the burst, and no job was killed by a scale-in -----------


def test_s5_workers_scale_to_zero_after_the_burst_and_every_job_ran_once(
    release: Release, burst: list[str]
) -> None:
    cmd = f"{RELEASE}-worker-cmd"
    release.wait(f"{cmd} scaled to 0", lambda: _replicas(release.cp, cmd) == 0, timeout=120)
    release.wait(
        "every cmd worker process stopped",
        lambda: all(p.process is None or p.process.poll() is not None for p in _cmd_pods(release)),
        timeout=90,
    )
    jobs = _jobs(release, burst)
    assert all(j["state"] == "succeeded" and j["attempts"] == 1 for j in jobs.values()), jobs
    stopped = [p for p in _cmd_pods(release) if p.kill_at is not None]
    assert stopped and not any(p.sigkilled for p in stopped), [p.name for p in stopped]


# --- S4: jobs older than the ack hand-over keep their pods; a new job is not starved ---


def test_s4_long_jobs_past_the_hand_over_keep_their_pod_and_a_new_job_gets_one(
    release: Release,
) -> None:
    cp, cmd = release.cp, f"{RELEASE}-worker-cmd"
    assert _replicas(cp, cmd) == 0  # S5 left the cmd workers at zero
    sleep = {"command": "sleep", "args": [str(LONG_S)]}
    long_ids = _submit(release, "cmd.run", sleep, CMD_CONCURRENCY)  # one pod's worth
    release.wait(
        "both long jobs running",
        lambda: all(j["state"] == "running" for j in _jobs(release, long_ids).values()),
        timeout=90,
    )
    # Past the hand-over both messages are acked: RabbitMQ counts neither job any more.
    release.wait(
        "the hand-over acked both messages",
        lambda: queue_messages(release.vhost, "conveyor.cmd.run") == 0,
        timeout=HANDOVER_S + 30,
    )
    # The trigger still counts both, so the busy pod stays (the HPA syncs every 5 s and may
    # scale in at once in these values).
    held_until = time.monotonic() + 15
    while time.monotonic() < held_until:
        assert _external_metric(release, cmd) == CMD_CONCURRENCY
        assert _replicas(cp, cmd) == 1
        time.sleep(1)

    # A job submitted now finds the pod's processes busy: it gets a pod of its own.
    (short,) = _submit(release, "cmd.run", {"command": "sleep", "args": ["2"]}, 1)
    release.wait(f"{cmd} scaled to 2", lambda: _replicas(cp, cmd) == 2, timeout=60)
    release.wait(
        "the new job succeeded",
        lambda: _jobs(release, [short])[short]["state"] == "succeeded",
        timeout=90,
    )
    still = _jobs(release, long_ids)
    assert all(j["state"] == "running" for j in still.values()), "it waited for the long jobs"

    release.wait(
        "the long jobs succeeded",
        lambda: all(j["state"] == "succeeded" for j in _jobs(release, long_ids).values()),
        timeout=LONG_S + 60,
    )
    jobs = _jobs(release, [*long_ids, short])
    assert all(j["attempts"] == 1 for j in jobs.values()), jobs
    release.wait(f"{cmd} back to 0", lambda: _replicas(cp, cmd) == 0, timeout=120)
    assert not any(p.sigkilled for p in _cmd_pods(release))


# --- S8: RabbitMQ down: the gateway stays in its Service and serves everything but submits


def _ready_api_endpoints(release: Release) -> int:
    slices = get_json(
        release.cp, "endpointslices", "-n", NAMESPACE, "-l",
        f"kubernetes.io/service-name={RELEASE}-api",
    )  # fmt: skip
    return sum(
        1
        for item in slices["items"]
        for endpoint in item.get("endpoints") or []
        if endpoint.get("conditions", {}).get("ready")
    )


def test_s8_with_rabbitmq_down_reads_still_reach_the_gateway_through_its_service(
    release: Release, burst: list[str]
) -> None:
    """This stops the machine's RabbitMQ application: nothing else may use it meanwhile
    (the suite runs one test at a time)."""
    assert _ready_api_endpoints(release) >= 1
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
    try:

        def degraded() -> bool:
            with release.gateway() as client:
                return bool(client.get("/readyz").json()["status"] == "degraded")

        release.wait("the gateway reports the broker down", degraded, timeout=60)
        # Readiness is about this process serving, not about RabbitMQ: the endpoint stays
        # ready through several probe periods (the kubelet probes every second or so).
        held_until = time.monotonic() + 15
        while time.monotonic() < held_until:
            assert _ready_api_endpoints(release) >= 1
            time.sleep(1)
        with release.gateway() as client:
            job = client.get(f"/v1/jobs/{burst[0]}")
            assert job.status_code == 200 and job.json()["state"] == "succeeded", job.text
            assert client.get("/v1/jobs").status_code == 200
            body = {"type": "cmd.run", "params": {"command": "echo", "args": ["x"]}}
            refused = client.post("/v1/jobs", json=body)
            assert refused.status_code == 503, refused.text
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
        subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, timeout=120)

    def ok() -> bool:
        with release.gateway() as client:
            return bool(client.get("/readyz").json()["status"] == "ok")

    release.wait("the gateway reconnected", ok, timeout=90)


# --- S6: ScaledJob: one Kubernetes Job per job; an upgrade mid-job kills none ---------


# About 35 s of one core: it must outlast the hand-over, a helm upgrade (its hook Job runs
# again), KEDA's poll and a new pod's start, with both cores shared by both trainings. 600
# trees (12 s) left no margin: a CI run saw the short jobs start 10 s after these ended.
ML_LONG = {
    "dataset": "synthetic",
    "n_samples": 8000,
    "model": "random_forest",
    "hyperparameters": {"n_estimators": 1800},
}
ML_SHORT = {"dataset": "iris", "model": "logistic_regression"}


def test_s6_scaledjob_runs_a_pod_per_job_and_an_upgrade_mid_job_kills_none(
    release: Release,
) -> None:
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

    def kube_jobs() -> dict[str, dict[str, Any]]:
        items = get_json(cp, "jobs", "-n", NAMESPACE, "-l", f"scaledjob.keda.sh/name={ml}")
        return {job["metadata"]["name"]: job for job in items["items"]}

    long_ids = _submit(release, "ml.train", ML_LONG, 2)
    release.wait(
        "both long trainings running",
        lambda: all(j["state"] == "running" for j in _jobs(release, long_ids).values()),
        timeout=120,
    )
    first_jobs = set(kube_jobs())
    assert len(first_jobs) == 2, first_jobs  # one Kubernetes Job per queued job
    release.wait(
        "the hand-over acked both messages",
        lambda: queue_messages(release.vhost, "conveyor.ml.train") == 0,
        timeout=HANDOVER_S + 30,
    )

    # A config change while they run: a new pod template (its checksum changes). With the
    # `gradual` rollout KEDA leaves the running Jobs alone.
    helm(
        cp, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values", "--timeout", "5m",
        "--set", "config.job_retention_s=86400",
    )  # fmt: skip
    # Jobs queued meanwhile get Jobs of their own: the running ones are in the count, and
    # KEDA's `default` strategy subtracts exactly them.
    short_ids = _submit(release, "ml.train", ML_SHORT, 2)
    every = [*long_ids, *short_ids]
    jobs: dict[str, dict[str, Any]] = {}

    def all_finished() -> bool:
        jobs.update(_jobs(release, every))
        return all(job["state"] in ("succeeded", "failed", "cancelled") for job in jobs.values())

    release.wait("every ml.train job finished", all_finished, timeout=300)
    assert all(j["state"] == "succeeded" and j["attempts"] == 1 for j in jobs.values()), jobs
    long_done = min(datetime.fromisoformat(jobs[i]["finished_at"]) for i in long_ids)
    for job_id in short_ids:  # not starved behind the long ones
        assert datetime.fromisoformat(jobs[job_id]["started_at"]) < long_done, jobs

    def models_served() -> bool:
        # The config change rolls the gateway too: a pod may go between pick and request.
        with release.gateway() as client:  # the model is in the store every pod shares
            models = [client.get(f"/v1/jobs/{i}/artifacts/model.skops") for i in every]
        return all(m.status_code == 200 and len(m.content) > 1000 for m in models)

    release.wait("every model downloadable", models_served, timeout=60)

    # The first two Jobs survived the upgrade, and each pod exited 0 after its one job
    # (CONVEYOR_WORKER_MAX_JOBS=1), so every Job completed.
    def completed() -> bool:
        now = kube_jobs()
        done = [name for name, job in now.items() if job["status"].get("succeeded") == 1]
        return first_jobs <= set(done) and len(done) >= len(every)

    release.wait("every Kubernetes Job completed", completed, timeout=120)
    pods = [p for p in release.kubelet.snapshot() if p.name.startswith(ml)]
    assert not any(p.sigkilled for p in pods), [p.name for p in pods if p.sigkilled]


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
