"""values.yaml, values.schema.json and the application's settings and job registry agree."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chart_support import (
    CHART,
    CI_VALUES,
    RenderError,
    by_kind,
    pod_specs,
    render,
    scenario_name,
)
from conveyor_core.jobs import CMD_RUN, DATA_TRANSFORM, JOB_TYPES, ML_TRAIN
from conveyor_core.settings import Settings

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"

# Settings the chart sets per component (env in the pod spec) or from the Secret, not config.
PER_COMPONENT = {
    "broker_url",
    "database_url",
    "artifact_url",
    "api_host",
    "api_port",
    "auto_migrate",
    "worker_concurrency",
    "soft_time_limit_s",
    "time_limit_s",
    "metrics_host",
    "metrics_port",
    "worker_max_jobs",  # set by the chart in ScaledJob mode
    "worker_idle_exit_s",  # likewise
}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMA["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _undocumented(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Paths of values.yaml keys the schema does not list, or lists without a description."""
    schema = _resolve(schema)
    free_form = "properties" not in schema and not isinstance(
        _resolve(schema.get("additionalProperties") or {}).get("properties"), dict
    )
    if not isinstance(value, dict) or free_form:  # a Kubernetes object or a string map
        return []
    missing = []
    for key, child in value.items():
        where = f"{path}.{key}" if path else key
        sub = schema.get("properties", {}).get(key)
        if sub is None and isinstance(schema.get("additionalProperties"), dict):
            sub = schema["additionalProperties"]
        if sub is None:
            missing.append(f"{where} (not in the schema)")
            continue
        if not (sub.get("description") or _resolve(sub).get("description")):
            missing.append(f"{where} (no description)")
        missing += _undocumented(child, sub, where)
    return missing


def test_values_yaml_is_valid_against_its_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator(SCHEMA).validate(VALUES)


def test_schema_describes_every_value():
    assert _undocumented(VALUES, SCHEMA, "") == []


def test_config_keys_are_exactly_the_settings_not_set_per_component():
    config = set(SCHEMA["properties"]["config"]["properties"])
    fields = set(Settings.model_fields)
    assert config.isdisjoint(PER_COMPONENT)
    assert config | PER_COMPONENT == fields, (
        "conveyor_core.settings.Settings and the chart's config schema differ: "
        f"only in Settings: {sorted(fields - config - PER_COMPONENT)}, "
        f"only in the chart: {sorted((config | PER_COMPONENT) - fields)}"
    )


@pytest.mark.parametrize("values", CI_VALUES, ids=scenario_name)
def test_every_conveyor_variable_the_chart_sets_is_a_setting(values):
    known = {f"CONVEYOR_{name.upper()}" for name in set(Settings.model_fields)}
    objects = render([values])
    names = set()
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            names |= set(obj["data"])
        if obj["kind"] == "Secret":
            names |= {k for k in obj["data"] if k.startswith("CONVEYOR_")}
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    unknown = {n for n in names if n.startswith("CONVEYOR_")} - known
    assert not unknown, f"not fields of conveyor_core.settings.Settings: {sorted(unknown)}"


DEFAULT_VALUES = CHART / "ci" / "default-values.yaml"


def rendered_workers(*sets: str, values: tuple[Path, ...] = ()) -> dict[str, dict[str, Any]]:
    """Worker Deployments of a render by their queue label: labels, container env, spec."""
    workers = {}
    for deployment in by_kind(render([DEFAULT_VALUES, *values], sets), "Deployment"):
        queue = deployment["metadata"]["labels"].get("conveyor.io/queue")
        if queue:
            workers[queue] = deployment
    return workers


def test_the_chart_declares_each_job_type_of_the_registry():
    # files/job-types.json is deploy/generate.py's (tests/deploy/test_generated.py keeps it
    # current); values.yaml only overrides workers it declares.
    declared = json.loads((CHART / "files" / "job-types.json").read_text())
    assert {name: entry["type"] for name, entry in declared.items()} == {
        job.worker: job.name for job in JOB_TYPES.values()
    }
    assert set(VALUES["workers"]) <= set(declared)


def test_each_worker_consumes_its_job_types_queue_within_its_time_limits():
    workers = rendered_workers()
    assert set(workers) == {job.queue for job in JOB_TYPES.values()}
    for job in JOB_TYPES.values():
        (container,) = workers[job.queue]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert container["image"].startswith(f"conveyor/worker-{job.worker}:")
        assert env["CONVEYOR_SOFT_TIME_LIMIT_S"] == str(job.soft_time_limit_s)
        assert env["CONVEYOR_TIME_LIMIT_S"] == str(job.time_limit_s)


def test_worker_defaults_reach_every_worker_and_a_workers_own_value_wins():
    workers = rendered_workers(
        "workerDefaults.metricsPort=9200",
        "workerDefaults.safeToEvict=true",
        "workers.cmd.metricsPort=9300",
        "workers.ml.safeToEvict=false",  # false wins over a default true (sprig's merge loses it)
        "workers.data.timeLimitSeconds=9000",
    )
    ml, cmd, data = (workers[job.queue] for job in (ML_TRAIN, CMD_RUN, DATA_TRANSFORM))

    def env(deployment: dict[str, Any]) -> dict[str, str]:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert [env(w)["CONVEYOR_METRICS_PORT"] for w in (ml, cmd, data)] == ["9200", "9300", "9200"]
    evictable = [
        w["spec"]["template"]["metadata"].get("annotations", {}).get(SAFE_TO_EVICT)
        for w in (ml, cmd, data)
    ]
    assert evictable == ["false", None, None]
    assert env(data)["CONVEYOR_TIME_LIMIT_S"] == "9000"
    assert env(data)["CONVEYOR_SOFT_TIME_LIMIT_S"] == str(DATA_TRANSFORM.soft_time_limit_s)


def test_an_empty_probe_disables_it_instead_of_merging_into_the_default(tmp_path: Path):
    values = tmp_path / "no-startup-probe.yaml"
    values.write_text("workers:\n  ml:\n    startupProbe: {}\n")
    workers = rendered_workers(values=(values,))
    probes = {
        queue: deployment["spec"]["template"]["spec"]["containers"][0].get("startupProbe")
        for queue, deployment in workers.items()
    }
    assert probes[ML_TRAIN.queue] is None
    assert probes[CMD_RUN.queue] is not None


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["workers.report.concurrency=1"], r"no job type has a worker named \"report\""),
        (["workers.data.queue=conveyor.ml.train"], r"must be the job type's queue"),
    ],
)
def test_a_worker_the_registry_does_not_declare_is_refused(sets, message):
    with pytest.raises(RenderError, match=message):
        render([DEFAULT_VALUES], sets)


@pytest.mark.parametrize("values", CI_VALUES, ids=scenario_name)
def test_the_application_reads_the_rendered_configuration(values, monkeypatch):
    """ConfigMap and per-container values parse into Settings exactly as the chart meant."""
    objects = render([values])
    (config_map,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")
    ]
    chart_config = yaml.safe_load(values.read_text()).get("config", {})
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            env = dict(config_map["data"])
            env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
            for name in list(os.environ):
                if name.startswith("CONVEYOR_"):
                    monkeypatch.delenv(name)
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            settings = Settings()
            for key, value in chart_config.items():
                assert getattr(settings, key) == value or (
                    key == "command_catalog"
                    and {
                        k: v.model_dump(exclude_defaults=True)
                        for k, v in settings.command_catalog.items()
                    }
                    == value
                )


def test_the_configuration_page_says_where_the_chart_sets_each_per_component_setting():
    build_script = CHART.parents[2] / "docs" / "build.py"
    spec = importlib.util.spec_from_file_location("docs_build", build_script)
    assert spec is not None and spec.loader is not None
    docs_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs_build)
    assert set(docs_build.CHART_SETS) == PER_COMPONENT
