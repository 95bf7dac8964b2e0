"""The Helm chart rendered for every ci/*-values.yaml scenario, checked object by object."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import (
    CHART,
    CI_VALUES,
    Manifest,
    RenderError,
    by_kind,
    container_env,
    helm,
    named,
    pod_specs,
    render,
    scenario_name,
    validate,
)
from conveyor_core.jobs import JOB_TYPES

SCENARIOS = pytest.mark.parametrize("values", CI_VALUES, ids=scenario_name)
QUEUE_OF_WORKER = {job.worker: job.queue for job in JOB_TYPES.values()}
REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)


def ci(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


def test_the_required_scenarios_exist():
    assert {scenario_name(v) for v in CI_VALUES} >= {
        "default",
        "production",
        "keda-off",
        "scaledjob",
        "one-worker-disabled",
    }


@SCENARIOS
def test_helm_lint_strict(values):
    result = helm("lint", "--strict", str(CHART), "-f", str(values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@SCENARIOS
def test_every_rendered_object_matches_its_schema(values):
    objects = render([values])
    assert objects
    for obj in objects:
        validate(obj)


@SCENARIOS
def test_every_container_is_locked_down(values):
    for name, spec in pod_specs(render([values])):
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, name
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name} container {container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True, where
            assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            assert "limits" in container.get("resources", {}), where
            # A read-only root needs a writable HOME/TMPDIR: /tmp is an emptyDir.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, where
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], where


@SCENARIOS
def test_no_service_account_token_is_mounted(values):
    for sa in by_kind(render([values]), "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


@SCENARIOS
def test_labels_follow_app_kubernetes_io(values):
    for obj in render([values]):
        labels = obj["metadata"].get("labels", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        for label in REQUIRED_LABELS:
            assert label in labels, f"{where} lacks {label}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        if obj["kind"] in ("Deployment", "Job"):
            template_labels = obj["spec"]["template"]["metadata"]["labels"]
            for label in REQUIRED_LABELS:
                assert label in template_labels, f"{where} pod template lacks {label}"
        if obj["kind"] == "Deployment":
            selector = obj["spec"]["selector"]["matchLabels"]
            assert selector.items() <= template_labels.items(), where
            assert "app.kubernetes.io/version" not in selector, f"{where}: selectors are immutable"


def _worker_triggers(objects: list[Manifest]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for obj in by_kind(objects, "ScaledObject") + by_kind(objects, "ScaledJob"):
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        worker = component.removeprefix("worker-")
        assert component.startswith("worker-") and worker in QUEUE_OF_WORKER, component
        yield worker, obj["spec"]["triggers"]


@SCENARIOS
def test_each_worker_scales_on_its_own_queue_counting_unacked_jobs(values):
    objects = render([values])
    auths = {a["metadata"]["name"]: a for a in by_kind(objects, "TriggerAuthentication")}
    seen = []
    for worker, triggers in _worker_triggers(objects):
        assert len(triggers) == 1
        trigger = triggers[0]
        meta = trigger["metadata"]
        # The job store's queued and running jobs of the worker's type: a busy pod is
        # demand, whatever the age of its job (tests/deploy/test_chart_long_jobs.py runs it).
        assert trigger["type"] == "postgresql"
        job_type = QUEUE_OF_WORKER[worker].removeprefix("conveyor.")
        assert f"type = '{job_type}'" in meta["query"]
        assert "state IN ('queued', 'running')" in meta["query"]
        assert "connection" not in meta, "credentials belong in the TriggerAuthentication"
        assert int(meta["targetQueryValue"]) >= 1
        assert float(meta["activationTargetQueryValue"]) >= 0
        auth = auths[trigger["authenticationRef"]["name"]]
        refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
        assert refs["connection"]["key"] == "KEDA_POSTGRESQL_URL"
        seen.append(worker)
    assert len(seen) == len(set(seen))
    if scenario_name(values) != "keda-off":
        assert seen


@SCENARIOS
def test_each_worker_deployment_names_the_queue_it_consumes(values):
    # `conveyor status --cluster` finds a job type's workers by this label.
    for deployment in by_kind(render([values]), "Deployment"):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        if component.startswith("worker-"):
            worker = component.removeprefix("worker-")
            queue = deployment["metadata"]["labels"]["conveyor.io/queue"]
            assert queue == QUEUE_OF_WORKER[worker], deployment["metadata"]["name"]


@SCENARIOS
def test_grace_outlasts_the_longest_job_and_scale_in_is_gradual(values):
    objects = render([values])
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    for so in by_kind(objects, "ScaledObject"):
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        spec = target["spec"]["template"]["spec"]
        grace = spec["terminationGracePeriodSeconds"]
        # A pod with a running job is never scaled to zero (the trigger counts running jobs),
        # so the cooldown is minutes, not tied to the grace (test_chart_long_jobs.py).
        assert 0 < so["spec"]["cooldownPeriod"] < grace
        assert so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        assert "replicas" not in target["spec"], "the HPA owns replicas"
        behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        down = behavior["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 300
        assert all(p["type"] == "Pods" and p["value"] == 1 for p in down["policies"])
    for name, spec in pod_specs(objects):
        for container in spec["containers"]:
            env = container_env(container)
            if "CONVEYOR_TIME_LIMIT_S" in env:
                hard, soft = (
                    int(env["CONVEYOR_TIME_LIMIT_S"]),
                    int(env["CONVEYOR_SOFT_TIME_LIMIT_S"]),
                )
                assert soft < hard <= spec["terminationGracePeriodSeconds"], name


def _secret_values(values: Path) -> list[str]:
    secrets = (yaml.safe_load(values.read_text()) or {}).get("secrets", {})
    found = [v for k, v in secrets.items() if k != "existingSecret" and v]
    # and the passwords alone
    found += [
        v.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        for v in list(found)
        if "@" in v and ":" in v.split("://", 1)[1].split("@", 1)[0]
    ]
    return found


@SCENARIOS
def test_no_plaintext_secret(values):
    objects = render([values])
    secrets = _secret_values(values)
    for obj in objects:
        if obj["kind"] == "Secret":
            assert "stringData" not in obj
            for value in obj.get("data", {}).values():
                base64.b64decode(value, validate=True)
            continue
        text = yaml.safe_dump(obj)
        for secret in secrets:
            assert secret not in text, f"{obj['kind']}/{obj['metadata']['name']} holds a secret"
        if obj["kind"] == "ConfigMap":
            for key, value in obj["data"].items():
                assert "@" not in value or "://" not in value, (
                    f"{key} looks like a URL with credentials"
                )
    for name, spec in pod_specs(objects):
        for container in spec["containers"]:
            for var in container.get("env", []):
                if var["name"] in ("CONVEYOR_BROKER_URL", "CONVEYOR_DATABASE_URL"):
                    assert "secretKeyRef" in var["valueFrom"], f"{name}: {var['name']}"


def test_default_render_has_no_credentials_at_all():
    objects = render([ci("default")])
    assert not by_kind(objects, "Secret"), "existingSecret: the chart makes no Secret"
    text = yaml.safe_dump_all(objects).lower()
    for word in ("password", "guest:guest", "amqp://", "postgresql://", "postgresql+psycopg://"):
        assert word not in text


def test_chart_defaults_refuse_to_pretend_a_database_exists():
    with pytest.raises(RenderError, match=r"secrets\.existingSecret.*CONVEYOR_DATABASE_URL"):
        render()


URLS = [
    "secrets.brokerUrl=amqp://u:p@rabbitmq:5672/%2F",
    "secrets.databaseUrl=postgresql+psycopg://u:p@postgres:5432/conveyor",
    # not a URL, but required as well: the chart does not guess a storage class
    "artifacts.persistence.storageClass=efs-sc",
]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["secrets.brokerUrl=amqp://u:p@rabbitmq:5672/%2F"], r"deploys neither"),
        ([*URLS[::2], "secrets.databaseUrl=sqlite:///var/conveyor.db"], r"SQLite"),
        (
            [*URLS, "workers.data.terminationGracePeriodSeconds=30"],
            r"shorter than timeLimitSeconds",
        ),
        ([*URLS, "workers.cmd.softTimeLimitSeconds=5000"], r"must be below timeLimitSeconds"),
        ([*URLS, "workers.cmd.keda.kind=ScaledJob"], r"set workers\.cmd\.concurrency to 1"),
        ([*URLS, "workers.cmd.keda.minReplicaCount=20"], r"above maxReplicaCount"),
        ([*URLS, "artifacts.url=/data/artifacts"], r"is a local path"),
        ([*URLS, "artifacts.persistence.enabled=false"], r"needs storage shared"),
        ([*URLS, "api.replicas=1"], r"api\.pdb\.minAvailable \(1\) must be below api\.replicas"),
        ([*URLS, "api.pdb.maxUnavailable=1"], r"not both"),
        ([*URLS, "workers.ml.keda.kedaa=true"], r"additional propert"),
        ([*URLS, "config.log_levle=DEBUG"], r"additional propert"),
        ([*URLS, "config.log_level=LOUD"], r"log_level"),
        ([*URLS, "config.auth_enabled=false"], r"anonymous admin.*api\.allowUnauthenticated"),
    ],
)
def test_impossible_combinations_fail_with_a_clear_message(sets, message):
    with pytest.raises(RenderError, match=message):
        render(sets=sets)


def test_keda_off_runs_fixed_replicas_without_keda_objects():
    objects = render([ci("keda-off")])
    assert not [o for o in objects if o["apiVersion"].startswith("keda.sh/")]
    workers = [d for d in by_kind(objects, "Deployment") if "worker" in d["metadata"]["name"]]
    assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in workers} == {
        "conveyor-worker-ml": 1,
        "conveyor-worker-cmd": 2,
        "conveyor-worker-data": 1,
    }


def test_scaledjob_mode_runs_one_pod_per_job():
    objects = render([ci("scaledjob")])
    names = {d["metadata"]["name"] for d in by_kind(objects, "Deployment")}
    assert "conveyor-worker-ml" not in names
    assert {"conveyor-worker-cmd", "conveyor-worker-data"} <= names
    job = named(objects, "ScaledJob", "conveyor-worker-ml")
    target = job["spec"]["jobTargetRef"]
    assert target["backoffLimit"] == 0, "RabbitMQ redelivers; Kubernetes must not retry too"
    assert target["parallelism"] == target["completions"] == 1
    pod = target["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    env = container_env(pod["containers"][0])
    assert env["CONVEYOR_WORKER_CONCURRENCY"] == "1"
    assert env["CONVEYOR_WORKER_MAX_JOBS"] == "1"
    assert target["activeDeadlineSeconds"] > pod["terminationGracePeriodSeconds"]
    assert job["spec"]["scalingStrategy"]["strategy"] == "default"
    assert job["spec"]["triggers"][0]["metadata"]["targetQueryValue"] == "1"


def test_a_disabled_worker_leaves_nothing_behind():
    objects = render([ci("one-worker-disabled")])
    assert not [o for o in objects if "worker-data" in o["metadata"]["name"]]
    assert {o["metadata"]["name"] for o in by_kind(objects, "ScaledObject")} == {
        "conveyor-worker-ml",
        "conveyor-worker-cmd",
    }


@SCENARIOS
def test_network_policies_admit_only_the_gateway_port_and_metrics(values):
    objects = render([values])
    policies = {p["metadata"]["name"]: p for p in by_kind(objects, "NetworkPolicy")}
    deployments = by_kind(objects, "Deployment") + [
        {"metadata": j["metadata"], "spec": j["spec"]["jobTargetRef"]}
        for j in by_kind(objects, "ScaledJob")
    ]
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        policy = policies[name]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        ports = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
        container_ports = [
            p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        ]
        assert ports == container_ports == (["http"] if name.endswith("-api") else ["metrics"])


@SCENARIOS
def test_migrations_run_once_as_a_pre_install_and_pre_upgrade_hook(values):
    objects = render([values])
    job = named(objects, "Job", "conveyor-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    api = named(objects, "Deployment", "conveyor-api")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == api["image"]
    assert container["args"] == ["migrate"] and api["args"] == ["serve"]
    assert container_env(api)["CONVEYOR_AUTO_MIGRATE"] == "false"
    secret_name = container_env(container)["CONVEYOR_DATABASE_URL"]["secretKeyRef"]["name"]
    hook_secrets = [s for s in by_kind(objects, "Secret") if s["metadata"]["name"] == secret_name]
    if hook_secrets:  # chart-made credentials: the hook has its own copy, made before the Job
        hook = hook_secrets[0]["metadata"]["annotations"]
        assert hook["helm.sh/hook"] == annotations["helm.sh/hook"]
        assert int(hook["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])


@SCENARIOS
def test_gateway_has_a_disruption_budget_and_a_helm_test(values):
    objects = render([values])
    pdb = named(objects, "PodDisruptionBudget", "conveyor-api")
    api = named(objects, "Deployment", "conveyor-api")
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= api["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pdb["spec"]["minAvailable"] < api["spec"]["replicas"]
    tests = [
        p
        for p in by_kind(objects, "Pod")
        if p["metadata"]["annotations"].get("helm.sh/hook") == "test"
    ]
    assert len(tests) == 1
    assert "/readyz" in " ".join(tests[0]["spec"]["containers"][0]["command"])


@SCENARIOS
def test_workers_probe_their_own_health_endpoint(values):
    for name, spec in pod_specs(render([values])):
        container = spec["containers"][0]
        if container["name"] != "worker":
            continue
        port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
        env = container_env(container)
        assert env["CONVEYOR_METRICS_PORT"] == str(port), name
        assert env["CONVEYOR_METRICS_HOST"] == "0.0.0.0", f"{name}: probes come from the node"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, name


@SCENARIOS
def test_notes_tell_how_to_submit_a_first_job(values):
    result = helm(
        "install",
        "conveyor",
        str(CHART),
        "--namespace",
        "conveyor",
        "--dry-run=client",
        "-f",
        str(values),
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "helm test conveyor" in notes
    assert 'POST "$CONVEYOR_URL/v1/jobs"' in notes
    enabled = {n for n, w in _values(values)["workers"].items() if w.get("enabled", True)}
    for name in QUEUE_OF_WORKER:
        assert (f"  {name}: queue {QUEUE_OF_WORKER[name]}" in notes) == (name in enabled)


def _values(values: Path) -> dict[str, Any]:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    override = yaml.safe_load(values.read_text()) or {}
    workers = {
        n: {**w, **override.get("workers", {}).get(n, {})} for n, w in defaults["workers"].items()
    }
    return {**defaults, "workers": workers}


def test_authentication_off_renders_only_when_accepted_explicitly():
    manifests = render(
        sets=[
            *URLS,
            "config.auth_enabled=false",
            "api.allowUnauthenticated=true",
            "config.local_hosts={conveyor.internal}",
        ]
    )
    config = next(
        m for m in manifests if m["kind"] == "ConfigMap" and "CONVEYOR_AUTH_ENABLED" in m["data"]
    )
    assert config["data"]["CONVEYOR_AUTH_ENABLED"] == "false"
    assert config["data"]["CONVEYOR_LOCAL_HOSTS"] == '["conveyor.internal"]'
