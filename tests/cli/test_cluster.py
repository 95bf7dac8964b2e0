"""`conveyor status --cluster`'s Kubernetes half, without a Kubernetes API server.

No cluster exists here, so the summarising and rendering are fed what the `kubernetes`
client would return: the chart's own Deployments (rendered by helm) turned into the
client's V1Deployment models by the client's own deserializer, and the chart's own
ScaledObjects / ScaledJobs with a `status` as KEDA writes it, checked against KEDA's CRD
schema. Reaching a real API server (kubeconfig, in-cluster account) is not tested here;
tests/cli/test_status.py checks that an unreachable one is reported, not fatal.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from conveyor_client.cli.app import _cluster_json
from conveyor_client.cli.cluster import (
    ClusterView,
    ScalerState,
    WorkerReplicas,
    summarise_deployments,
    summarise_scalers,
)
from conveyor_client.cli.render import queues_table
from conveyor_core.api_models import QueueStatus
from conveyor_core.jobs import JOB_TYPES
from deploy.chart_support import CHART, by_kind, render, validate
from kubernetes.client import ApiClient, V1Deployment
from rich.console import Console

DEFAULT_VALUES = CHART / "ci" / "default-values.yaml"
READY = {
    "type": "Ready",
    "status": "True",
    "reason": "ScaledObjectReady",
    "message": "ScaledObject is defined correctly and is ready for scaling",
}
ACTIVE = {
    "type": "Active",
    "status": "True",
    "reason": "ScalerActive",
    "message": "Scaling is performed because triggers are active",
}
IDLE = {
    "type": "Active",
    "status": "False",
    "reason": "ScalerNotActive",
    "message": "Scaling is not performed because triggers are not active",
}
BROKEN = {
    "type": "Ready",
    "status": "False",
    "reason": "ScaledObjectCheckFailed",
    "message": "Triggers defined in ScaledObject are not working correctly",
}


def with_status(scaler: dict[str, Any], *conditions: dict[str, str]) -> dict[str, Any]:
    """The object as the API server returns it once KEDA has reconciled it."""
    live = copy.deepcopy(scaler)
    live["status"] = {
        "conditions": list(conditions),
        "externalMetricNames": [
            f"s0-{trigger['type']}-{trigger['name']}" for trigger in scaler["spec"]["triggers"]
        ],
        "lastActiveTime": "2026-11-27T10:00:00Z",
    }
    if live["kind"] == "ScaledObject":
        live["status"] |= {
            "scaleTargetKind": "apps/v1.Deployment",
            "hpaName": live["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"],
            "originalReplicaCount": 1,
        }
    validate(live)  # shaped like KEDA's CRD says
    return live


def as_client_model(deployment: dict[str, Any], replicas: int, ready: int) -> V1Deployment:
    """A rendered Deployment as `AppsV1Api.list_namespaced_deployment` would give it."""
    live = copy.deepcopy(deployment)
    live["spec"]["replicas"] = replicas  # KEDA's HPA sets it when the chart leaves it out
    live["status"] = {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas}
    model: V1Deployment = ApiClient().deserialize(
        json.dumps(live), "V1Deployment", "application/json"
    )
    return model


def named(objects: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    (match,) = [o for o in objects if o["metadata"]["name"].endswith(suffix)]
    return match


QUEUES = [
    QueueStatus(
        job_type=name,
        queue=job_type.queue,
        messages=waiting,
        consumers=consumers,
        dead_letter_queue=job_type.dead_letter_queue,
        dead_letter_messages=0,
    )
    for (name, job_type), (waiting, consumers) in zip(
        JOB_TYPES.items(), [(3, 1), (0, 0), (0, 1)], strict=True
    )
]


def test_workers_and_scalers_are_matched_to_their_queues_and_shown():
    objects = render([DEFAULT_VALUES])
    scaled = by_kind(objects, "ScaledObject")
    live_scalers = [
        with_status(named(scaled, "-ml"), READY, ACTIVE),
        with_status(named(scaled, "-cmd"), READY, IDLE),
        with_status(named(scaled, "-data"), BROKEN, IDLE),
    ]
    deployments = by_kind(objects, "Deployment")
    live_deployments = [
        as_client_model(named(deployments, "worker-ml"), replicas=2, ready=1),
        as_client_model(named(deployments, "worker-cmd"), replicas=0, ready=0),
        as_client_model(named(deployments, "worker-data"), replicas=1, ready=1),
        as_client_model(named(deployments, "-api"), replicas=2, ready=2),  # not a worker
    ]

    scalers = summarise_scalers(live_scalers, "ScaledObject")
    workers = summarise_deployments(live_deployments, scalers)

    assert workers == {
        "conveyor.ml.train": WorkerReplicas("conveyor.ml.train", "conveyor-worker-ml", 2, 1, 2),
        "conveyor.cmd.run": WorkerReplicas("conveyor.cmd.run", "conveyor-worker-cmd", 0, 0, 0),
        "conveyor.data.transform": WorkerReplicas(
            "conveyor.data.transform", "conveyor-worker-data", 1, 1, 1
        ),
    }
    assert {queue: s.summary for queue, s in scalers.items()} == {
        "conveyor.ml.train": "active",
        "conveyor.cmd.run": "idle",
        "conveyor.data.transform": "not ready: "
        "Triggers defined in ScaledObject are not working correctly",
    }
    ml = scalers["conveyor.ml.train"]
    assert (ml.kind, ml.name, ml.target) == (
        "ScaledObject",
        "conveyor-worker-ml",
        "conveyor-worker-ml",
    )
    assert (ml.min_replicas, ml.max_replicas) == (0, 10)

    view = ClusterView("kubeconfig context prod", "conveyor", workers, scalers)
    console = Console(width=250, record=True, color_system=None)
    console.print(queues_table(QUEUES, view))
    text = console.export_text()
    lines = {line.split()[0]: line for line in text.splitlines()[2:] if line.strip()}
    assert "namespace conveyor" in text
    assert lines["ml.train"].split()[2:6] == ["3", "1", "0", "1/2"]
    assert "ScaledObject conveyor-worker-ml: active, 0..10" in lines["ml.train"]
    assert "0/0 (conveyor-worker-cmd)" in lines["cmd.run"] and ": idle" in lines["cmd.run"]
    assert "not ready: Triggers defined" in lines["data.transform"]

    as_json = _cluster_json(view)
    assert as_json is not None
    assert {w["queue"]: w["ready"] for w in as_json["workers"]} == {
        "conveyor.ml.train": 1,
        "conveyor.cmd.run": 0,
        "conveyor.data.transform": 1,
    }
    assert json.dumps(as_json)  # plain data, printable with --output json


def test_without_keda_the_deployments_label_names_the_queue():
    objects = render([CHART / "ci" / "keda-off-values.yaml"])
    assert not by_kind(objects, "ScaledObject")
    live = [as_client_model(d, replicas=2, ready=2) for d in by_kind(objects, "Deployment")]
    workers = summarise_deployments(live, scalers={})
    assert set(workers) == {job_type.queue for job_type in JOB_TYPES.values()}
    assert all((w.desired, w.ready) == (2, 2) for w in workers.values())


def test_a_deployment_without_the_label_is_found_through_its_scaledobject():
    objects = render([DEFAULT_VALUES])
    scaler = with_status(named(by_kind(objects, "ScaledObject"), "-ml"), READY, IDLE)
    deployment = copy.deepcopy(named(by_kind(objects, "Deployment"), "worker-ml"))
    del deployment["metadata"]["labels"]["conveyor.io/queue"]  # as charts before the label
    scalers = summarise_scalers([scaler], "ScaledObject")
    workers = summarise_deployments([as_client_model(deployment, 1, 0)], scalers)
    assert workers["conveyor.ml.train"].deployment == "conveyor-worker-ml"


def test_a_scaledjob_is_summarised_without_a_deployment():
    objects = render([CHART / "ci" / "scaledjob-values.yaml"])
    (scaled_job, *_) = by_kind(objects, "ScaledJob")
    live = with_status(
        scaled_job,
        {
            "type": "Ready",
            "status": "True",
            "reason": "ScaledJobReady",
            "message": "ScaledJob is defined correctly and is ready to scaling",
        },
        {
            "type": "Active",
            "status": "True",
            "reason": "ScalerActive",
            "message": "Scaling is performed because triggers are active",
        },
    )
    (state,) = summarise_scalers([live], "ScaledJob").values()
    assert isinstance(state, ScalerState)
    assert (state.kind, state.target, state.summary) == ("ScaledJob", None, "active")
    assert state.queue == "conveyor.ml.train"


def test_a_scaler_of_a_chart_before_the_queue_label_is_matched_by_its_rabbitmq_trigger():
    scaler = copy.deepcopy(named(by_kind(render([DEFAULT_VALUES]), "ScaledObject"), "-ml"))
    del scaler["metadata"]["labels"]["conveyor.io/queue"]
    scaler["spec"]["triggers"] = [
        {"type": "rabbitmq", "name": "queue", "metadata": {"queueName": "conveyor.ml.train"}}
    ]
    assert list(summarise_scalers([scaler], "ScaledObject")) == ["conveyor.ml.train"]
    del scaler["spec"]["triggers"][0]["metadata"]["queueName"]
    assert summarise_scalers([scaler], "ScaledObject") == {}  # nothing names its queue


@pytest.mark.parametrize("status", [None, {}, {"conditions": []}])
def test_a_scaler_keda_has_not_reconciled_yet_is_unknown(status):
    scaler = copy.deepcopy(named(by_kind(render([DEFAULT_VALUES]), "ScaledObject"), "-cmd"))
    if status is not None:
        scaler["status"] = status
    (state,) = summarise_scalers([scaler], "ScaledObject").values()
    assert (state.ready, state.active, state.summary) == ("Unknown", "Unknown", "ready=Unknown")
