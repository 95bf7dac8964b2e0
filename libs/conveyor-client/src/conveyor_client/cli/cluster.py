"""Worker replicas and KEDA scalers, read with the official `kubernetes` client.

Used by `conveyor status --cluster` when a kubeconfig or an in-cluster service account is
present. Objects are found by the Helm chart's labels: worker Deployments and KEDA scalers carry
`conveyor.io/queue: <queue>`, and every object `app.kubernetes.io/part-of: conveyor`.
The summarising functions take the client's own model objects (V1Deployment) and KEDA
objects as the dicts the CustomObjectsApi returns, so they are tested without a cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, V1Deployment

PART_OF_SELECTOR = "app.kubernetes.io/part-of=conveyor"
QUEUE_LABEL = "conveyor.io/queue"
KEDA_GROUP, KEDA_VERSION = "keda.sh", "v1alpha1"
SCALER_PLURALS = {"ScaledObject": "scaledobjects", "ScaledJob": "scaledjobs"}
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT_S = 5


@dataclass(frozen=True)
class WorkerReplicas:
    """A worker Deployment: how many pods it should have and how many are ready."""

    queue: str
    deployment: str
    desired: int
    ready: int
    updated: int


@dataclass(frozen=True)
class ScalerState:
    """A KEDA ScaledObject or ScaledJob and its Ready / Active conditions."""

    queue: str
    kind: str
    name: str
    target: str | None
    ready: str  # the condition's status: "True", "False" or "Unknown"
    active: str
    min_replicas: int | None
    max_replicas: int | None
    message: str  # why it is not ready, from the Ready condition

    @property
    def summary(self) -> str:
        if self.ready != "True":
            return f"not ready: {self.message}" if self.message else f"ready={self.ready}"
        return "active" if self.active == "True" else "idle"


@dataclass
class ClusterView:
    source: str  # "kubeconfig context X" or "in-cluster"
    namespace: str
    workers: dict[str, WorkerReplicas] = field(default_factory=dict)
    scalers: dict[str, ScalerState] = field(default_factory=dict)


class ClusterUnavailable(Exception):
    """No cluster configuration here, or the API server could not be read."""


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def summarise_scalers(objects: list[dict[str, Any]], kind: str) -> dict[str, ScalerState]:
    """Queue -> scaler state, for KEDA objects labelled with their queue.

    Charts before the `conveyor.io/queue` label on scalers had a RabbitMQ trigger that
    names the queue; that is the fallback.
    """
    scalers = {}
    for obj in objects:
        spec, status = obj.get("spec", {}), obj.get("status") or {}
        labelled = (obj.get("metadata", {}).get("labels") or {}).get(QUEUE_LABEL)
        queues = (
            [labelled]
            if labelled
            else [
                trigger.get("metadata", {}).get("queueName")
                for trigger in spec.get("triggers", [])
                if trigger.get("type") == "rabbitmq"
            ]
        )
        ready, active = _condition(status, "Ready"), _condition(status, "Active")
        target = spec.get("scaleTargetRef", {}).get("name") if kind == "ScaledObject" else None
        for queue in filter(None, queues):
            scalers[queue] = ScalerState(
                queue=queue,
                kind=kind,
                name=obj["metadata"]["name"],
                target=target,
                ready=ready.get("status", "Unknown"),
                active=active.get("status", "Unknown"),
                min_replicas=spec.get("minReplicaCount"),
                max_replicas=spec.get("maxReplicaCount"),
                message="" if ready.get("status") == "True" else ready.get("message", ""),
            )
    return scalers


def summarise_deployments(
    deployments: list[V1Deployment], scalers: dict[str, ScalerState]
) -> dict[str, WorkerReplicas]:
    """Queue -> replicas of the worker Deployment consuming it.

    The queue comes from the Deployment's `conveyor.io/queue` label, or else from the
    ScaledObject that targets it (charts older than that label).
    """
    queue_of_target = {s.target: s.queue for s in scalers.values() if s.target}
    workers = {}
    for deployment in deployments:
        metadata, spec, status = deployment.metadata, deployment.spec, deployment.status
        name = (metadata.name if metadata else None) or ""
        labels = (metadata.labels if metadata else None) or {}
        queue = labels.get(QUEUE_LABEL) or queue_of_target.get(name)
        if not queue:
            continue  # the gateway, or something else of the release
        workers[queue] = WorkerReplicas(
            queue=queue,
            deployment=name,
            desired=spec.replicas if spec and spec.replicas is not None else 1,
            ready=(status.ready_replicas if status else None) or 0,
            updated=(status.updated_replicas if status else None) or 0,
        )
    return workers


def _kubeconfig_paths() -> list[Path]:
    configured = os.environ.get("KUBECONFIG")
    paths = configured.split(os.pathsep) if configured else ["~/.kube/config"]
    return [Path(p).expanduser() for p in paths if p]


def connect(context: str | None = None) -> tuple[ApiClient, str, str]:
    """(API client, source, namespace) for the in-cluster account or the kubeconfig.

    Raises ClusterUnavailable when neither exists or the `kubernetes` package is missing.
    """
    try:
        from kubernetes import client, config
    except ImportError as error:
        raise ClusterUnavailable(
            "the kubernetes package is not installed: install conveyor-client[cluster]"
        ) from error
    if os.environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT / "token").exists():
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip()
        return client.ApiClient(configuration), "in-cluster service account", namespace
    paths = [path for path in _kubeconfig_paths() if path.is_file()]
    if not paths:
        raise ClusterUnavailable("no kubeconfig (KUBECONFIG, ~/.kube/config) or in-cluster config")
    config_file = os.pathsep.join(str(path) for path in paths)
    try:
        contexts, current = config.list_kube_config_contexts(config_file=config_file)
        chosen = (
            next((c for c in contexts if c["name"] == context), current) if context else current
        )
        api = config.new_client_from_config(
            config_file=config_file, context=chosen["name"], persist_config=False
        )
    except (config.ConfigException, StopIteration, KeyError, TypeError) as error:
        raise ClusterUnavailable(f"cannot use the kubeconfig {config_file}: {error}") from error
    namespace = chosen.get("context", {}).get("namespace") or "default"
    return api, f"kubeconfig context {chosen['name']}", namespace


def read_cluster(context: str | None = None, namespace: str | None = None) -> ClusterView:
    """The worker Deployments and KEDA scalers of the release in the namespace."""
    import urllib3
    from kubernetes import client

    api, source, default_namespace = connect(context)
    namespace = namespace or default_namespace
    view = ClusterView(source=source, namespace=namespace)
    try:
        with api:
            custom = client.CustomObjectsApi(api)
            for kind, plural in SCALER_PLURALS.items():
                try:
                    listed = custom.list_namespaced_custom_object(
                        KEDA_GROUP,
                        KEDA_VERSION,
                        namespace,
                        plural,
                        label_selector=PART_OF_SELECTOR,
                        _request_timeout=REQUEST_TIMEOUT_S,
                    )
                except client.ApiException as error:
                    if error.status == 404:  # KEDA (this kind's CRD) is not installed
                        continue
                    raise
                items = listed.get("items", []) if isinstance(listed, dict) else []
                view.scalers.update(summarise_scalers(items, kind))
            deployments = client.AppsV1Api(api).list_namespaced_deployment(
                namespace, label_selector=PART_OF_SELECTOR, _request_timeout=REQUEST_TIMEOUT_S
            )
    except client.ApiException as error:
        raise ClusterUnavailable(
            f"the API server refused ({error.status} {error.reason})"
        ) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ClusterUnavailable(f"cannot reach the API server: {error}") from error
    view.workers = summarise_deployments(deployments.items, view.scalers)
    return view
