"""Rendering the Helm chart and validating Kubernetes objects, for the tests in tests/deploy.

Everything here runs without a cluster: `helm` renders, kubernetes-validate checks core kinds
against the Kubernetes OpenAPI schemas, and the CRDs copied into crds/ check KEDA and
Prometheus-Operator kinds with jsonschema.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "conveyor"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KEDA_DIR = REPO / "deploy" / "keda"
CRD_DIR = Path(__file__).resolve().parent / "crds"
KUBERNETES_VERSION = "1.35.0"
RELEASE = "conveyor"
NAMESPACE = "conveyor"

Manifest = dict[str, Any]


def scenario_name(values: Path) -> str:
    return values.name.removesuffix("-values.yaml")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def tool(name: str) -> str:
    """Path of a pinned tool in .tools/bin (`make tools`): missing fails in CI, skips locally."""
    path = REPO / ".tools" / "bin" / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    message = (
        f"{path} is missing: run `make -f deploy/deploy.mk tools` (fetches pinned helm/kubectl)"
    )
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("helm"), *args], capture_output=True, text=True, check=check, cwd=REPO, timeout=120
    )


@functools.cache
def _render_text(values: tuple[str, ...], sets: tuple[str, ...]) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", path]
    for item in sets:
        args += ["--set", item]
    result = helm(*args, check=False)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout


class RenderError(Exception):
    """`helm template` refused the values; the message is helm's."""


def render(values: Iterable[Path | str] = (), sets: Iterable[str] = ()) -> list[Manifest]:
    """Render the chart (hooks and test pods included) and return its objects."""
    text = _render_text(tuple(str(v) for v in values), tuple(sets))
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_manifests(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(objects: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: Iterable[Manifest], kind: str, name: str) -> Manifest:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_specs(objects: Iterable[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload: Pod, Deployment, Job, KEDA ScaledJob."""
    specs = []
    for obj in objects:
        kind, name = obj["kind"], f"{obj['kind']}/{obj['metadata']['name']}"
        if kind == "Pod":
            specs.append((name, obj["spec"]))
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            specs.append((name, obj["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            specs.append((name, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif kind == "ScaledJob":
            specs.append((name, obj["spec"]["jobTargetRef"]["template"]["spec"]))
    return specs


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- schema validation


def _strict(schema: Any) -> Any:
    """Refuse unknown fields where the CRD lists its fields (like kubeconform -strict)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator, from every CRD in tests/deploy/crds/."""
    validators = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in load_manifests(path):
            spec = crd["spec"]
            for version in spec["versions"]:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                # apiVersion/kind/metadata are checked by the API server, not the CRD schema.
                schema = _strict(schema)
                schema["properties"]["metadata"] = {"type": "object"}
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                validators[key] = jsonschema.Draft7Validator(schema)
    return validators


def validate(obj: Manifest) -> None:
    """Raise AssertionError naming the object and the first schema errors."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    validator = crd_validators().get(key)
    if validator is not None:
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        assert not errors, f"{name}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
        )
        return
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(map(str, error.path))
        raise AssertionError(f"{name}: {path}: {error.message}") from None
    except kubernetes_validate.SchemaNotFoundError:
        raise AssertionError(
            f"{name}: no schema for {key} (add its CRD to tests/deploy/crds/)"
        ) from None


def which(name: str) -> str | None:
    return shutil.which(name) or (
        str(REPO / ".venv" / "bin" / name) if (REPO / ".venv" / "bin" / name).exists() else None
    )
