"""Helpers for the chart scenarios: a namespace, the connection Secret, helm, RabbitMQ counts.

The vhost and database come from tests/support/stack.py (the same ones the end-to-end
tests use); this module adds what is specific to installing the chart on the control plane.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
from controlplane import HOST, REPO, ControlPlane

CHART = REPO / "deploy/helm/conveyor"
HELM = REPO / ".tools/bin/helm"


def helm(cp: ControlPlane, *args: str, timeout: float = 300) -> str:
    """Run helm against the control plane; raise with its output when it fails."""
    result = subprocess.run(
        [str(HELM), *args],
        env={
            **cp.env(),
            "HELM_CACHE_HOME": str(cp.workdir / "helm-cache"),
            "HELM_CONFIG_HOME": str(cp.workdir / "helm-config"),
            "HELM_DATA_HOME": str(cp.workdir / "helm-data"),
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def restricted_namespace(cp: ControlPlane, name: str) -> None:
    """A namespace where PodSecurity `restricted` is enforced on every Pod."""
    cp.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        }
    )
    cp.wait_for(
        f"default ServiceAccount in {name}",
        lambda: cp.kubectl("get", "sa", "default", "-n", name).returncode == 0,
    )


def connection_secret(cp: ControlPlane, namespace: str, name: str, vhost: str, db_url: str) -> None:
    """The Secret of docs/deploy.md (secrets.existingSecret) for a local broker and database."""
    quoted = urllib.parse.quote(vhost, safe="")
    cp.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "stringData": {
                "CONVEYOR_BROKER_URL": f"amqp://guest:guest@{HOST}:5672/{quoted}",
                "CONVEYOR_DATABASE_URL": db_url,
                "KEDA_POSTGRESQL_URL": db_url.replace("postgresql+psycopg://", "postgresql://"),
            },
        }
    )


def get_json(cp: ControlPlane, *args: str) -> Any:
    return json.loads(cp.kubectl("get", *args, "-o", "json").stdout)


def release_objects(cp: ControlPlane, namespace: str, release: str) -> list[str]:
    """Every namespaced object (any kind the API lists) labelled with the release."""
    kinds = cp.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout
    # Events carry no labels; KEDA's HPAs carry the ScaledObject's labels.
    wanted = ",".join(k for k in kinds.split() if k not in ("events", "events.events.k8s.io"))
    out = cp.kubectl(
        "get",
        wanted,
        "-n",
        namespace,
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
        "--ignore-not-found",
    ).stdout
    return out.split()


def queue_messages(vhost: str, queue: str) -> int:
    """Ready + unacked messages of a queue, as RabbitMQ's management API reports them."""
    url = f"http://{HOST}:15672/api/queues/{urllib.parse.quote(vhost, safe='')}/{queue}"
    response = httpx.get(url, auth=("guest", "guest"), timeout=10)
    response.raise_for_status()
    return int(response.json().get("messages", 0))


def queue_exists(vhost: str, queue: str) -> bool:
    url = f"http://{HOST}:15672/api/queues/{urllib.parse.quote(vhost, safe='')}/{queue}"
    return httpx.get(url, auth=("guest", "guest"), timeout=10).status_code == 200


def create_api_key(db_url: str, workdir: Path) -> str:
    """An admin key, made as docs/deploy.md says (`conveyor-api keys create`), run locally."""
    from kubelet import VENV_BIN

    result = subprocess.run(
        [str(VENV_BIN / "conveyor-api"), "keys", "create", "k8s-tests", "--admin"],
        env={"PATH": f"{VENV_BIN}:/usr/bin:/bin", "CONVEYOR_DATABASE_URL": db_url},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]
