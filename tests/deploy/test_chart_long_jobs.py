"""The chart keeps long jobs alive and installs as documented.

ScaledJob rollouts and node scale-down leave running jobs alone, the Ingress publishes the
API but not /metrics and passes uploads of the gateway's size, worker sizing matches the
settings that bound a job, and the defaults refuse storage that would stay Pending.
"""

from __future__ import annotations

import base64
import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import (
    CHART,
    CI_VALUES,
    REPO,
    RenderError,
    by_kind,
    container_env,
    named,
    pod_specs,
    render,
    scenario_name,
    validate,
)
from conveyor_core.jobs import CMD_RUN
from conveyor_core.settings import Settings
from conveyor_core.store import utcnow
from conveyor_core.store.engine import make_sync_engine
from conveyor_core.store.migrate import upgrade_to_head
from sqlalchemy import text
from support.rows import insert_job
from support.stack import postgres_database

SCENARIOS = pytest.mark.parametrize("values", CI_VALUES, ids=scenario_name)
MiB = 1024 * 1024
DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}
# What every render needs besides these tests' own values: connections and shared storage.
BASE = [
    "secrets.brokerUrl=amqp://u:p@rabbitmq:5672/%2F",
    "secrets.databaseUrl=postgresql+psycopg://u:p@postgres:5432/conveyor",
    "artifacts.url=s3://bucket/prefix",
]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS")


def ci(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


def worker_pod(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The pod template (metadata and spec) of a worker, Deployment or ScaledJob."""
    full = f"conveyor-worker-{name}"
    for obj in by_kind(objects, "Deployment"):
        if obj["metadata"]["name"] == full:
            return obj["spec"]["template"]
    return named(objects, "ScaledJob", full)["spec"]["jobTargetRef"]["template"]


# --- 1. The scaling signal: queued + running jobs of the type, from the job store


def _trigger_queries(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Each autoscaled worker's trigger query, by worker name."""
    queries = {}
    for obj in [*by_kind(objects, "ScaledObject"), *by_kind(objects, "ScaledJob")]:
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "postgresql"
        queries[obj["metadata"]["name"].removeprefix("conveyor-worker-")] = trigger["metadata"][
            "query"
        ]
    return queries


def test_the_scaling_query_counts_every_queued_and_running_job_of_its_type_whatever_its_age():
    """The rendered query, run on a migrated job store: a job running for hours, acked by
    the hand-over long ago, is still demand; finished jobs and other types are not."""
    queries = _trigger_queries(render([ci("scaledjob")], BASE))
    assert set(queries) == {"ml", "cmd", "data"}
    hours_ago = utcnow() - timedelta(hours=5)
    with postgres_database() as url:
        upgrade_to_head(url)
        engine = make_sync_engine(url)
        for state in ("queued", "queued", "running", "succeeded", "failed", "cancelled"):
            insert_job(engine, state=state)
        insert_job(engine, state="running", started_at=hours_ago, handed_over_at=hours_ago)
        insert_job(engine, type="ml.train", state="running", started_at=hours_ago)
        with engine.connect() as connection:
            counts = {name: connection.scalar(text(q)) for name, q in queries.items()}
        engine.dispose()
    assert counts == {"cmd": 4, "ml": 1, "data": 0}


def _keda_url(sets: list[str]) -> str:
    (secret,) = [
        s for s in by_kind(render(sets=sets), "Secret") if "CONVEYOR_BROKER_URL" in s["data"]
    ]
    return base64.b64decode(secret["data"]["KEDA_POSTGRESQL_URL"]).decode()


def test_keda_reads_the_job_store_with_the_database_url_in_libpq_form():
    assert _keda_url(BASE) == "postgresql://u:p@postgres:5432/conveyor"
    # A narrower role for KEDA (SELECT on jobs) replaces it.
    readonly = "postgresql://keda:pw@postgres:5432/conveyor"
    assert _keda_url([*BASE, f"secrets.kedaPostgresqlUrl={readonly}"]) == readonly


@pytest.mark.parametrize("strategy", ["accurate", "eager", "custom"])
def test_a_scaledjob_strategy_that_expects_a_queued_only_count_is_refused(strategy):
    # They subtract pending Jobs only, or none: with running jobs in the count, each
    # running job would get a second Kubernetes Job.
    sets = [*BASE, f"workers.ml.keda.scaledJob.scalingStrategy={strategy}"]
    with pytest.raises(RenderError, match="scalingStrategy"):
        render([ci("scaledjob")], sets)


# --- 2. ScaledJob rollouts


def test_a_scaledjob_change_lets_running_jobs_finish():
    job = named(render([ci("scaledjob")]), "ScaledJob", "conveyor-worker-ml")
    # KEDA's default rollout deletes the running Jobs whenever the ScaledJob changes, and
    # the pod template's config checksums make every config change or image bump one.
    assert job["spec"]["rollout"] == {"strategy": "gradual"}
    assert "rolloutStrategy" not in job["spec"], "deprecated in favour of rollout.strategy"
    validate(job)


def test_the_scaledjob_rollout_strategy_can_be_set_back_to_immediate():
    objects = render(
        [ci("scaledjob")], sets=["workers.ml.keda.scaledJob.rolloutStrategy=immediate"]
    )
    job = named(objects, "ScaledJob", "conveyor-worker-ml")
    assert job["spec"]["rollout"] == {"strategy": "immediate"}


def test_a_scaledjob_pod_that_finds_no_message_exits_instead_of_idling():
    objects = render([ci("scaledjob")], sets=["workers.ml.keda.scaledJob.idleExitSeconds=90"])
    job = named(objects, "ScaledJob", "conveyor-worker-ml")
    [container] = job["spec"]["jobTargetRef"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["CONVEYOR_WORKER_MAX_JOBS"] == "1"
    assert env["CONVEYOR_WORKER_IDLE_EXIT_S"] == "90"
    for deployment in by_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names = {item["name"] for item in container.get("env", [])}
            assert "CONVEYOR_WORKER_IDLE_EXIT_S" not in names  # long-lived workers stay


# --- 3. node scale-down


def worker_templates(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod template of every worker by name, Deployments and ScaledJobs alike."""
    templates = {}
    for obj in by_kind(objects, "Deployment") + by_kind(objects, "ScaledJob"):
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        if component.startswith("worker-"):
            spec = obj["spec"].get("jobTargetRef", obj["spec"])
            templates[component.removeprefix("worker-")] = spec["template"]
    return templates


@SCENARIOS
def test_worker_pods_are_not_evicted_by_node_autoscalers(values):
    templates = worker_templates(render([values]))
    assert templates
    for name, template in templates.items():
        annotations = template["metadata"]["annotations"]
        assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false", name
        assert annotations["karpenter.sh/do-not-disrupt"] == "true", name


def test_eviction_protection_is_per_worker_and_leaves_the_gateway_alone():
    objects = render(sets=[*BASE, "workers.cmd.safeToEvict=true"])
    cmd = worker_pod(objects, "cmd")["metadata"]["annotations"]
    assert "cluster-autoscaler.kubernetes.io/safe-to-evict" not in cmd
    assert "karpenter.sh/do-not-disrupt" not in cmd
    ml = worker_pod(objects, "ml")["metadata"]["annotations"]
    assert ml["karpenter.sh/do-not-disrupt"] == "true"
    api = named(objects, "Deployment", "conveyor-api")["spec"]["template"]["metadata"]
    assert "karpenter.sh/do-not-disrupt" not in api["annotations"]


def test_a_pod_annotation_of_the_same_name_wins_without_a_duplicate_key(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {"workers": {"ml": {"podAnnotations": {"karpenter.sh/do-not-disrupt": "false"}}}}
        )
    )
    objects = render([values], sets=BASE)
    annotations = worker_pod(objects, "ml")["metadata"]["annotations"]
    assert annotations["karpenter.sh/do-not-disrupt"] == "false"


# --- 6a. the Ingress publishes the API, not /metrics


def _app_paths() -> list[str]:
    """Every path the gateway serves, with {parameters} filled in."""
    from conveyor_api.main import create_app

    def walk(routes: Any, prefix: str = "") -> Any:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:  # newer FastAPI keeps included routers nested
                context = getattr(route, "include_context", None)
                yield from walk(inner.routes, prefix + getattr(context, "prefix", ""))
            elif hasattr(route, "path"):
                yield prefix + route.path

    paths = set(walk(create_app(Settings()).routes))
    return sorted(re.sub(r"\{[^}]+\}", "x", p) for p in paths)


def _matches(rule: dict[str, Any], path: str) -> bool:
    """Kubernetes Ingress matching: Exact is equality, Prefix goes element by element."""
    if rule["pathType"] == "Exact":
        return rule["path"] == path
    prefix = [e for e in rule["path"].split("/") if e]
    return [e for e in path.split("/") if e][: len(prefix)] == prefix


def _ingress_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (ingress,) = by_kind(objects, "Ingress")
    return [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]


@pytest.mark.parametrize(
    "objects",
    [
        pytest.param(lambda: render([ci("production")]), id="production"),
        pytest.param(lambda: render(sets=[*BASE, "api.ingress.enabled=true"]), id="defaults"),
    ],
)
def test_the_ingress_routes_every_api_path_but_not_metrics(objects):
    rules = _ingress_rules(objects())
    assert rules
    private = {"/metrics", "/readyz"}  # unauthenticated; Prometheus and kubelet are in-cluster
    for path in _app_paths():
        routed = any(_matches(rule, path) for rule in rules)
        assert routed == (path not in private), (
            f"{path} is {'routed' if routed else 'not routed'} by the Ingress"
        )


@pytest.mark.parametrize("path", ["/", "/metrics"])
def test_an_ingress_path_that_publishes_metrics_fails(path):
    with pytest.raises(RenderError, match=r"api\.ingress.*/metrics.*api\.ingress\.paths"):
        render(
            sets=[
                *BASE,
                "api.ingress.enabled=true",
                f"api.ingress.hosts[0].host=conveyor.example.com,"
                f"api.ingress.hosts[0].paths[0].path={path},"
                "api.ingress.hosts[0].paths[0].pathType=Prefix",
            ]
        )


# --- 6b. the Ingress takes uploads as large as the gateway does


def test_production_ingress_takes_the_gateways_largest_upload():
    (ingress,) = by_kind(render([ci("production")]), "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert size == f"{math.ceil(DEFAULTS['max_upload_bytes'] / MiB)}m"
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"


def test_the_ingress_body_limit_follows_config_and_an_explicit_annotation_wins():
    on = [*BASE, "api.ingress.enabled=true"]
    (ingress,) = by_kind(render(sets=[*on, "config.max_upload_bytes=1073741824"]), "Ingress")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == (
        "1024m"
    )
    (ingress,) = by_kind(
        render(
            sets=[
                *on,
                "api.ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-body-size=2g",
            ]
        ),
        "Ingress",
    )
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "2g"


# --- 7a. the cmd worker's memory limit holds its commands


def _cmd_floor(concurrency: int, per_command: int) -> int:
    return concurrency * per_command + 256 * MiB


def _bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": MiB, "Gi": 1024 * MiB, "K": 10**3, "M": 10**6, "G": 10**9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", quantity).groups()
    return int(float(number) * units.get(unit, 1))


@SCENARIOS
def test_cmd_memory_limit_holds_every_command_at_its_rlimit(values):
    objects = render([values])
    if not any(o["metadata"]["name"] == "conveyor-worker-cmd" for o in objects):
        pytest.skip("no cmd worker")
    container = worker_pod(objects, "cmd")["spec"]["containers"][0]
    env = container_env(container)
    config = (yaml.safe_load(values.read_text()) or {}).get("config", {})
    per_command = config.get("cmd_max_memory_bytes", DEFAULTS["cmd_max_memory_bytes"])
    floor = _cmd_floor(int(env["CONVEYOR_WORKER_CONCURRENCY"]), per_command)
    assert _bytes(container["resources"]["limits"]["memory"]) >= floor


@pytest.mark.parametrize(
    ("limit", "ok"),
    [
        (f"{_cmd_floor(4, DEFAULTS['cmd_max_memory_bytes']) // MiB}Mi", True),
        (f"{_cmd_floor(4, DEFAULTS['cmd_max_memory_bytes']) // MiB - 1}Mi", False),
        (str(_cmd_floor(4, DEFAULTS["cmd_max_memory_bytes"])), True),
        ("1Gi", False),
        ("2.25Gi", True),
        ("2G", False),
        ("3G", True),
    ],
)
def test_a_cmd_memory_limit_below_its_commands_fails(limit, ok):
    sets = [*BASE, "workers.cmd.concurrency=4", f"workers.cmd.resources.limits.memory={limit}"]
    if ok:
        render(sets=sets)
        return
    with pytest.raises(
        RenderError,
        match=r"workers\.cmd\.resources\.limits\.memory .* Set it to at least 2304Mi",
    ):
        render(sets=sets)


def test_the_cmd_memory_check_follows_concurrency_and_the_command_rlimit():
    render(
        sets=[
            *BASE,
            "workers.cmd.concurrency=2",
            f"config.cmd_max_memory_bytes={128 * MiB}",
            "workers.cmd.resources.limits.memory=512Mi",
        ]
    )
    with pytest.raises(RenderError, match=r"at least 4352Mi"):
        render(sets=[*BASE, "workers.cmd.concurrency=8"])


def test_an_unreadable_memory_quantity_fails_with_its_name():
    with pytest.raises(RenderError, match=r"quantity \"lots\""):
        render(sets=[*BASE, "workers.cmd.resources.limits.memory=lots"])


# --- 7b. thread pools sized to the pod, not the node


@SCENARIOS
def test_every_worker_sizes_its_thread_pools_to_its_cpu(values):
    for name, spec in pod_specs(render([values])):
        container = spec["containers"][0]
        if container["name"] != "worker":
            continue
        env = container_env(container)
        threads = {env.get(var) for var in THREAD_VARS}
        assert len(threads) == 1 and None not in threads, name
        assert int(threads.pop()) >= 1, name


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ([], {"ml": 1, "data": 1, "cmd": 1}),  # requests 1 / 500m / 250m, no CPU limits
        (["workers.ml.resources.limits.cpu=3500m"], {"ml": 4}),  # ceil
        (["workers.ml.resources.requests.cpu=6"], {"ml": 6}),  # the request without a limit
        (
            ["workers.data.resources.limits.cpu=8", "workers.data.concurrency=2"],
            {"data": 4},
        ),  # each pool process runs a job of its own
        (["workers.ml.resources.limits.cpu=100m"], {"ml": 1}),  # min 1
        (["workers.ml.threads=12", "workers.ml.resources.limits.cpu=2"], {"ml": 12}),
    ],
)
def test_thread_count_follows_the_cpu_limit_or_the_threads_value(sets, expected):
    objects = render(sets=[*BASE, *sets])
    for worker, count in expected.items():
        env = container_env(worker_pod(objects, worker)["spec"]["containers"][0])
        assert {env[var] for var in THREAD_VARS} == {str(count)}, worker


# --- 7c. the command timeout fits in the worker's time limit


def test_default_cmd_timeout_fits_under_the_soft_time_limit():
    assert DEFAULTS["cmd_max_timeout_s"] < CMD_RUN.soft_time_limit_s


@pytest.mark.parametrize(
    "sets",
    [
        ["config.cmd_max_timeout_s=7200"],
        [f"workers.cmd.softTimeLimitSeconds={DEFAULTS['cmd_max_timeout_s']}"],
    ],
)
def test_a_command_timeout_beyond_the_worker_time_limit_fails(sets):
    with pytest.raises(
        RenderError, match=r"config\.cmd_max_timeout_s \(\d+\).*workers\.cmd\.softTimeLimitSeconds"
    ):
        render(sets=[*BASE, *sets])


def test_a_longer_command_timeout_renders_with_longer_worker_limits():
    render(
        sets=[
            *BASE,
            "config.cmd_max_timeout_s=7200",
            "workers.cmd.softTimeLimitSeconds=7260",
            "workers.cmd.timeLimitSeconds=7320",
        ]
    )


# --- 8a. defaults that install on a stock cluster


def test_no_storage_choice_fails_with_what_to_set():
    sets = [s for s in BASE if not s.startswith("artifacts.")]
    with pytest.raises(
        RenderError,
        match=r"artifacts\.url.*artifacts\.persistence\.storageClass.*existingClaim",
    ):
        render(sets=sets)


@pytest.mark.parametrize(
    ("sets", "claim"),
    [
        (["artifacts.persistence.storageClass=efs-sc"], "conveyor-artifacts"),
        (["artifacts.persistence.existingClaim=shared"], None),
        (["artifacts.url=s3://bucket/prefix"], None),
    ],
)
def test_each_storage_choice_renders(sets, claim):
    base = [s for s in BASE if not s.startswith("artifacts.")]
    objects = render(sets=[*base, *sets])
    claims = by_kind(objects, "PersistentVolumeClaim")
    assert [c["metadata"]["name"] for c in claims] == ([claim] if claim else [])
    for c in claims:
        assert c["spec"]["storageClassName"] == "efs-sc"
        assert c["spec"]["accessModes"] == ["ReadWriteMany"]


# --- 8b. docker compose


COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_rabbitmq_keeps_its_node_name_across_container_recreation():
    # RabbitMQ stores its data under rabbit@<hostname>; a random container hostname would
    # start an empty node database on the same volume and lose the queued messages.
    assert COMPOSE["services"]["rabbitmq"]["hostname"] == "rabbitmq"
    assert "rabbitmq-data:/var/lib/rabbitmq" in COMPOSE["services"]["rabbitmq"]["volumes"]


def _shell_commands(markdown: str) -> list[str]:
    """The commands of the ```bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        commands += [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    return commands


def test_the_compose_quick_start_creates_a_key_and_sends_it():
    docs = (REPO / "docs" / "deploy.md").read_text()
    section = docs.split("## docker compose", 1)[1].split("\n## ", 1)[0]
    commands = _shell_commands(section)
    assert any("docker compose exec -T api conveyor-api keys create" in c for c in commands)
    calls = [c for c in commands if c.startswith("curl") and "/v1/" in c]
    assert calls
    for call in calls:
        assert "Authorization: Bearer $CONVEYOR_KEY" in call, call
    # compose keeps the application's default: authentication on
    assert "CONVEYOR_AUTH_ENABLED" not in str(COMPOSE)
