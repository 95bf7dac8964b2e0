"""values.yaml, values.schema.json and the application's settings and job registry agree."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import jsonschema
import pytest
import yaml
from chart_support import CHART, CI_VALUES, pod_specs, render, scenario_name
from conveyor_core.jobs import JOB_TYPES
from conveyor_core.settings import Settings

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())

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


def test_each_job_type_has_a_worker_on_its_own_queue():
    workers = VALUES["workers"]
    assert {job.worker: job.queue for job in JOB_TYPES.values()} == {
        name: worker["queue"] for name, worker in workers.items()
    }


@pytest.mark.parametrize("name", sorted(VALUES["workers"]))
def test_worker_time_limits_stay_within_the_job_type(name):
    worker = VALUES["workers"][name]
    job = next(j for j in JOB_TYPES.values() if j.queue == worker["queue"])
    assert worker["softTimeLimitSeconds"] < worker["timeLimitSeconds"] <= job.time_limit_s


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
