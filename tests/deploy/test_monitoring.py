"""The chart's monitoring objects: PrometheusRule, dashboard ConfigMaps, and their sources.

deploy/prometheus/rules.yml is rendered from the chart's PrometheusRule (`make alert-rules`)
and deploy/grafana/*.json from deploy/grafana/build.py (`make dashboards`); these tests fail
when a committed file drifts from its source. promtool checks the rules and runs the unit
tests in deploy/prometheus/tests. tests/observability evaluates all of it on real data.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import REPO, by_kind, helm, in_ci, render, validate

RULES = REPO / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "tests"
RUNBOOKS = REPO / "docs" / "runbooks.md"
# Connections and shared storage: what every render needs.
REQUIRED = ["secrets.existingSecret=conveyor", "artifacts.url=s3://unused"]
ENABLED = [
    *REQUIRED,
    "metrics.prometheusRule.enabled=true",
    "metrics.grafanaDashboards.enabled=true",
]


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location("grafana_build", REPO / "deploy/grafana/build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is missing: run `make prometheus` (Debian package prometheus)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


def rendered_rules_text() -> str:
    """What `make alert-rules` writes: the PrometheusRule's spec, as a plain rules file."""
    result = helm(
        "template",
        "conveyor",
        str(REPO / "deploy/helm/conveyor"),
        "--namespace",
        "conveyor",
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "secrets.existingSecret=unused",
        "--set",
        "artifacts.url=s3://unused",
        "--show-only",
        "templates/monitoring/prometheusrule.yaml",
    )
    lines = result.stdout.splitlines()
    body = lines[lines.index("spec:") + 1 :]
    header = [line for line in RULES.read_text().splitlines() if line.startswith("#")][:3]
    return "\n".join(header + [line.removeprefix("  ") for line in body]) + "\n"


def test_rules_file_is_the_rendered_prometheusrule():
    assert RULES.read_text() == rendered_rules_text(), (
        "deploy/prometheus/rules.yml differs from the chart's PrometheusRule: "
        "run `make alert-rules`"
    )


def test_dashboards_are_what_the_generator_writes():
    stale = [
        str(path.relative_to(REPO))
        for path, text in _builder().outputs().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"out of date, run `make dashboards`: {stale}"


def test_monitoring_objects_are_off_by_default():
    objects = render(sets=REQUIRED)
    assert not by_kind(objects, "PrometheusRule")
    assert not [o for o in by_kind(objects, "ConfigMap") if "dashboard" in o["metadata"]["name"]]


def test_prometheusrule_validates_and_every_alert_has_a_runbook():
    (rule,) = by_kind(render(sets=ENABLED), "PrometheusRule")
    validate(rule)
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.MULTILINE)
    }
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    names = {r["alert"] for r in alerts}
    assert names == {
        "ConveyorGatewayErrorRatioHigh",
        "ConveyorJobFailureRatioHigh",
        "ConveyorQueueWaitHigh",
        "ConveyorQueueNotConsumed",
        "ConveyorWorkerNoSuccess",
        "ConveyorDeadLetterQueueNotEmpty",
        "ConveyorQueueMetricsMissing",
        "ConveyorTargetDown",
    }
    for alert in alerts:
        annotations = alert["annotations"]
        assert annotations.get("summary") and annotations.get("description"), alert["alert"]
        url = annotations["runbook_url"]
        assert url.endswith(f"docs/runbooks.md#{alert['alert'].lower()}"), url
        assert alert["alert"].lower() in anchors, f"docs/runbooks.md has no ## {alert['alert']}"
        assert alert["labels"]["severity"] in ("warning", "critical")


def test_per_type_alerts_follow_the_workers_map():
    objects = render(
        sets=[
            *ENABLED,
            "workers.ml.enabled=false",
            "metrics.prometheusRule.queueWaitP95Seconds.cmd=42",
        ]
    )
    (rule,) = by_kind(objects, "PrometheusRule")
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    wait = {r["labels"]["type"]: r["expr"] for r in alerts if r["alert"] == "ConveyorQueueWaitHigh"}
    assert set(wait) == {"cmd.run", "data.transform"}
    assert wait["cmd.run"].rstrip().endswith("> 42")
    assert wait["data.transform"].rstrip().endswith("> 600")


def test_dashboard_configmaps_carry_the_committed_json_for_the_sidecar():
    maps = [
        o
        for o in by_kind(render(sets=ENABLED), "ConfigMap")
        if "dashboard" in o["metadata"]["name"]
    ]
    assert len(maps) == 2
    for config_map in maps:
        validate(config_map)
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = config_map["data"].items()
        assert json.loads(text) == json.loads((REPO / "deploy/grafana" / name).read_text())


def test_dashboards_are_well_formed():
    builder = _builder()
    for uid, build in builder.DASHBOARDS.items():
        board = build()
        assert board["uid"] == uid
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), uid
        titles = [p["title"] for p in board["panels"] if p["type"] != "row"]
        assert len(titles) == len(set(titles)), f"{uid}: duplicate panel titles"
        for panel, query in builder.panel_queries(board):
            assert query["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert query["expr"].count("(") == query["expr"].count(")"), panel["title"]
        assert any(v["name"] == "datasource" for v in board["templating"]["list"])
    job_type = builder.job_type()
    assert "type" in {v["name"] for v in job_type["templating"]["list"]}
    assert set(builder.PREVIEW_PANELS) <= {p["title"] for p in builder.overview()["panels"]}


def test_promtool_checks_the_rules_and_the_rendered_prometheusrule(tmp_path: Path):
    (rule,) = by_kind(render(sets=ENABLED), "PrometheusRule")
    from_chart = tmp_path / "from-chart.yml"
    from_chart.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES), str(from_chart)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    tests = sorted(p.name for p in RULE_TESTS.glob("*.yml"))
    assert tests
    result = subprocess.run(
        [promtool(), "test", "rules", *tests],
        cwd=RULE_TESTS,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TZ": "UTC"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
