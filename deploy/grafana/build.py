"""Conveyor's Grafana dashboards as code: the source of deploy/grafana/*.json.

`make dashboards` (python deploy/grafana/build.py) writes the JSON files Grafana imports and
the chart's templates/monitoring/_dashboards.tpl, from which the chart makes ConfigMaps for
the Grafana sidecar. `--check` exits 1 when a committed file differs from what this writes;
tests/observability evaluates every query below against a real Prometheus.

Queue depth comes from RabbitMQ's rabbitmq_prometheus plugin (/metrics/detailed with the
queue_coarse_metrics and queue_consumer_count families; labels vhost, queue). "Replicas" are
worker pods reporting conveyor_worker_up, summed per type: the pods actually consuming, for
Deployments and ScaledJobs alike (docs/observability.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "deploy" / "grafana"
CHART_TEMPLATE = (
    REPO / "deploy" / "helm" / "conveyor" / "templates" / "monitoring" / "_dashboards.tpl"
)

Panel = dict[str, Any]
Dashboard = dict[str, Any]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

# --- PromQL building blocks, shared by both dashboards.
MAIN_QUEUES = r'queue=~"conveyor\\..+", queue!~".+\\.dead-letter"'
DEAD_LETTER_QUEUES = r'queue=~"conveyor\\..+\\.dead-letter"'


def by_type(metric: str, selector: str = MAIN_QUEUES) -> str:
    """A RabbitMQ queue metric summed per job type (queue conveyor.<type> -> type)."""
    return (
        f'sum by (type) (label_replace({metric}{{{selector}}}, "type", "$1", "queue", '
        r'"conveyor\\.(.+)"))'
    )


def rate_by_type(counter: str, matcher: str = "") -> str:
    return f"sum by (type) (rate({counter}{{{matcher}}}[{RATE}]))"


def quantile(q: float, histogram: str, matcher: str = "", by: str = "type") -> str:
    return (
        f"histogram_quantile({q}, sum by ({by}, le) "
        f"(rate({histogram}_bucket{{{matcher}}}[{RATE}])))"
    )


def success_ratio(matcher: str = "") -> str:
    """succeeded / (succeeded + failed) per type; a missing series (no success or no failure
    yet: counters appear with their first increment) counts as 0 instead of hiding the type."""
    ok = rate_by_type("conveyor_jobs_succeeded_total", matcher)
    failed = rate_by_type("conveyor_jobs_failed_total", matcher)
    ok_or_0 = f"({ok} or 0 * {failed})"
    failed_or_0 = f"({failed} or 0 * {ok})"
    return f"{ok_or_0} / ({ok_or_0} + {failed_or_0})"


OK_ALL = f"(sum(rate(conveyor_jobs_succeeded_total[{RATE}])) or vector(0))"
FAILED_ALL = f"(sum(rate(conveyor_jobs_failed_total[{RATE}])) or vector(0))"

REPLICAS = (
    "sum by (type) (conveyor_worker_up)"
    f" or on (type) 0 * {by_type('rabbitmq_detailed_queue_messages')}"
)


# --- panel builders


class Layout:
    """Hands out panel ids and grid positions, row by row (24 columns)."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0

    def place(self, w: int, h: int) -> dict[str, Any]:
        if self.x + w > 24:
            self.newline()
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def newline(self) -> None:
        self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def take_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def target(expr: str, legend: str, ref: str, **extra: Any) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
        "refId": ref,
        **extra,
    }


def targets(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def row(layout: Layout, title: str) -> Panel:
    layout.newline()
    panel = {
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": layout.y},
        "id": layout.take_id(),
        "panels": [],
        "title": title,
        "type": "row",
    }
    layout.y += 1
    return panel


def timeseries(
    layout: Layout,
    title: str,
    description: str,
    queries: list[dict[str, Any]],
    unit: str,
    w: int = 12,
    h: int = 8,
    min_value: float | None = 0,
    max_value: float | None = None,
    overrides: list[dict[str, Any]] | None = None,
    stack: bool = False,
) -> Panel:
    defaults: dict[str, Any] = {
        "custom": {
            "drawStyle": "line",
            "fillOpacity": 10 if not stack else 60,
            "lineWidth": 2,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        },
        "unit": unit,
    }
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    return {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "gridPos": layout.place(w, h),
        "id": layout.take_id(),
        "options": {
            "legend": {
                "calcs": ["lastNotNull", "max"],
                "displayMode": "table",
                "placement": "bottom",
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": queries,
        "title": title,
        "type": "timeseries",
    }


def stat(
    layout: Layout,
    title: str,
    description: str,
    expr: str,
    unit: str,
    legend: str = "",
    w: int = 4,
    thresholds: list[tuple[float | None, str]] | None = None,
) -> Panel:
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "green")])]
    return {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": steps},
                "unit": unit,
            },
            "overrides": [],
        },
        "gridPos": layout.place(w, 4),
        "id": layout.take_id(),
        "options": {
            "colorMode": "value",
            "graphMode": "area",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        },
        "targets": [target(expr, legend, "A", instant=False)],
        "title": title,
        "type": "stat",
    }


def right_axis(regex: str) -> dict[str, Any]:
    """Override: series whose name matches `regex` on a right axis, dashed."""
    return {
        "matcher": {"id": "byRegexp", "options": regex},
        "properties": [
            {"id": "custom.axisPlacement", "value": "right"},
            {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "decimals", "value": 0},
            {"id": "custom.axisLabel", "value": "replicas"},
        ],
    }


def datasource_variable() -> dict[str, Any]:
    return {
        "current": {},
        "hide": 0,
        "label": "Prometheus",
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "type": "datasource",
    }


def dashboard(
    uid: str, title: str, description: str, panels: list[Panel], variables: list[dict[str, Any]]
) -> Dashboard:
    return {
        "annotations": {"list": []},
        "description": description,
        "editable": True,
        "graphTooltip": 1,
        "links": [
            {
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "tags": ["conveyor"],
                "title": "Conveyor",
                "type": "dashboards",
            }
        ],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["conveyor"],
        "templating": {"list": variables},
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
    }


# --- the dashboards

# The overview panels `make dashboards-preview` draws (docs/img/dashboard-overview.png).
PREVIEW_PANELS = (
    "Throughput by type",
    "Success ratio by type",
    "Queue depth vs replicas",
    "Jobs in flight",
    "Queue wait p50 / p95",
    "Run time p50 / p95",
)


def overview() -> Dashboard:
    lay = Layout()
    panels: list[Panel] = [row(lay, "Is work flowing?")]
    panels += [
        stat(
            lay,
            "Submitted / min",
            "Jobs the gateway accepted (202), all types.",
            f"sum(rate(conveyor_jobs_submitted_total[{RATE}])) * 60",
            "none",
        ),
        stat(
            lay,
            "Success ratio",
            "succeeded / (succeeded + failed), all types. Cancelled jobs are not counted.",
            f"{OK_ALL} / ({OK_ALL} + {FAILED_ALL})",
            "percentunit",
            thresholds=[(None, "red"), (0.9, "orange"), (0.99, "green")],
        ),
        stat(
            lay,
            "Running now",
            "Jobs running now, all types.",
            "sum(conveyor_jobs_in_progress)",
            "none",
        ),
        stat(
            lay,
            "Jobs waiting",
            "Ready messages in the job queues (RabbitMQ): submitted, not started.",
            f"sum(rabbitmq_detailed_queue_messages_ready{{{MAIN_QUEUES}}})",
            "none",
            thresholds=[(None, "green"), (50, "orange")],
        ),
        stat(
            lay,
            "Worker replicas",
            "Worker pods consuming (conveyor_worker_up), all types.",
            "sum(conveyor_worker_up)",
            "none",
        ),
        stat(
            lay,
            "Dead-lettered",
            "Messages in the dead-letter queues: jobs whose worker was lost on every attempt.",
            f"sum(rabbitmq_detailed_queue_messages{{{DEAD_LETTER_QUEUES}}})",
            "none",
            thresholds=[(None, "green"), (1, "red")],
        ),
    ]
    panels.append(
        timeseries(
            lay,
            "Throughput by type",
            "Jobs per minute: accepted by the gateway, and finished by the workers.",
            targets(
                (f"{rate_by_type('conveyor_jobs_submitted_total')} * 60", "{{type}} submitted"),
                (f"{rate_by_type('conveyor_jobs_succeeded_total')} * 60", "{{type}} succeeded"),
                (f"{rate_by_type('conveyor_jobs_failed_total')} * 60", "{{type}} failed"),
            ),
            "opm",
        )
    )
    panels.append(
        timeseries(
            lay,
            "Success ratio by type",
            "succeeded / (succeeded + failed) per job type; gaps: nothing finished.",
            targets((success_ratio(), "{{type}}")),
            "percentunit",
            max_value=1,
        )
    )
    panels.append(row(lay, "Are we scaled right?"))
    panels.append(
        timeseries(
            lay,
            "Queue depth vs replicas",
            "Messages per job queue (ready + unacknowledged, i.e. waiting + running) against "
            "the worker pods consuming it (right axis). Depth rising while replicas stay flat: "
            "KEDA at maxReplicaCount or pods not starting.",
            targets(
                (by_type("rabbitmq_detailed_queue_messages"), "{{type}} depth"),
                (REPLICAS, "{{type}} replicas"),
            ),
            "none",
            overrides=[right_axis(".* replicas")],
        )
    )
    panels.append(
        timeseries(
            lay,
            "Jobs in flight",
            "Jobs running now per type, across every worker pod and pool process.",
            targets(("sum by (type) (conveyor_jobs_in_progress)", "{{type}}")),
            "none",
            stack=True,
        )
    )
    panels.append(row(lay, "How long do jobs wait and run?"))
    panels.append(
        timeseries(
            lay,
            "Queue wait p50 / p95",
            "Submission to start, per type (jobs that started in the interval).",
            targets(
                (quantile(0.5, "conveyor_job_queue_wait_seconds"), "{{type}} p50"),
                (quantile(0.95, "conveyor_job_queue_wait_seconds"), "{{type}} p95"),
            ),
            "s",
        )
    )
    panels.append(
        timeseries(
            lay,
            "Run time p50 / p95",
            "Start to outcome, per type (jobs that finished in the interval).",
            targets(
                (quantile(0.5, "conveyor_job_run_duration_seconds"), "{{type}} p50"),
                (quantile(0.95, "conveyor_job_run_duration_seconds"), "{{type}} p95"),
            ),
            "s",
        )
    )
    panels.append(row(lay, "What fails?"))
    panels.append(
        timeseries(
            lay,
            "Failed, cancelled, retried / min",
            "Failed: the job ended failed. Cancelled: stopped on request while running. "
            "Retried: started again after its worker was lost.",
            targets(
                (f"{rate_by_type('conveyor_jobs_failed_total')} * 60", "{{type}} failed"),
                (f"{rate_by_type('conveyor_jobs_cancelled_total')} * 60", "{{type}} cancelled"),
                (f"{rate_by_type('conveyor_jobs_retried_total')} * 60", "{{type}} retried"),
            ),
            "opm",
            w=8,
        )
    )
    panels.append(
        timeseries(
            lay,
            "Submissions rejected / min",
            "Refused submissions by reason: validation (422), forbidden (403), limit, "
            "idempotency_conflict (409), broker_unavailable / store_unavailable (503).",
            targets(
                (
                    f"sum by (reason) (rate(conveyor_submissions_rejected_total[{RATE}])) * 60",
                    "{{reason}}",
                )
            ),
            "opm",
            w=8,
        )
    )
    panels.append(
        timeseries(
            lay,
            "Gateway answers by status / s",
            "Every HTTP answer of the gateway by status code. 5xx: see the "
            "ConveyorGatewayErrorRatioHigh runbook.",
            targets(
                (
                    f"sum by (status) (rate(conveyor_http_requests_total[{RATE}]))",
                    "{{status}}",
                )
            ),
            "reqps",
            w=8,
            stack=True,
        )
    )
    panels.append(
        timeseries(
            lay,
            "Gateway latency p95 by route",
            "Time to answer, by route template.",
            targets(
                (
                    quantile(0.95, "conveyor_http_request_duration_seconds", by="route, method"),
                    "{{method}} {{route}}",
                )
            ),
            "s",
        )
    )
    panels.append(
        timeseries(
            lay,
            "Publish to confirm p95 / broker connected",
            "Time from publishing a job to RabbitMQ's publisher confirm, by type; and whether "
            "the gateway is connected to RabbitMQ (1) or not (0).",
            targets(
                (quantile(0.95, "conveyor_publish_duration_seconds"), "{{type}} publish p95"),
                ("min(conveyor_gateway_broker_connected)", "broker connected"),
            ),
            "s",
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "broker connected"},
                    "properties": [
                        {"id": "custom.axisPlacement", "value": "right"},
                        {"id": "unit", "value": "bool"},
                        {"id": "max", "value": 1},
                    ],
                }
            ],
        )
    )
    return dashboard(
        "conveyor-overview",
        "Conveyor / Overview",
        "Is work flowing, how long do jobs wait and run, what fails, are we scaled right.",
        panels,
        [datasource_variable()],
    )


def job_type() -> Dashboard:
    lay = Layout()
    t = 'type="$type"'
    queue = 'queue="conveyor.$type"'
    panels: list[Panel] = [row(lay, "$type now")]
    panels += [
        stat(
            lay,
            "Waiting",
            "Ready messages in conveyor.$type.",
            f"sum(rabbitmq_detailed_queue_messages_ready{{{queue}}})",
            "none",
        ),
        stat(
            lay,
            "Running",
            "Jobs running now (conveyor_jobs_in_progress).",
            f"sum(conveyor_jobs_in_progress{{{t}}})",
            "none",
        ),
        stat(
            lay,
            "Replicas",
            "Worker pods of this type consuming (conveyor_worker_up).",
            f"sum(conveyor_worker_up{{{t}}})",
            "none",
        ),
        stat(
            lay,
            "Consumers",
            "Consumers RabbitMQ counts on conveyor.$type (one per worker pod).",
            f"sum(rabbitmq_detailed_queue_consumers{{{queue}}})",
            "none",
        ),
        stat(
            lay,
            "Since last success",
            "Time since a job of this type last succeeded.",
            f"time() - max(conveyor_job_last_success_timestamp_seconds{{{t}}})",
            "s",
        ),
        stat(
            lay,
            "Dead-lettered",
            "Messages in conveyor.$type.dead-letter.",
            'sum(rabbitmq_detailed_queue_messages{queue="conveyor.$type.dead-letter"})',
            "none",
            thresholds=[(None, "green"), (1, "red")],
        ),
    ]
    panels.append(
        timeseries(
            lay,
            "Jobs / min by outcome",
            "Submitted (gateway), started, succeeded, failed, cancelled, retried (workers). "
            "Deferred: sent to the back of the queue, its key at CONVEYOR_MAX_RUNNING_PER_KEY.",
            targets(
                (f"sum(rate(conveyor_jobs_submitted_total{{{t}}}[{RATE}])) * 60", "submitted"),
                (f"sum(rate(conveyor_jobs_started_total{{{t}}}[{RATE}])) * 60", "started"),
                (f"sum(rate(conveyor_jobs_succeeded_total{{{t}}}[{RATE}])) * 60", "succeeded"),
                (f"sum(rate(conveyor_jobs_failed_total{{{t}}}[{RATE}])) * 60", "failed"),
                (f"sum(rate(conveyor_jobs_cancelled_total{{{t}}}[{RATE}])) * 60", "cancelled"),
                (f"sum(rate(conveyor_jobs_retried_total{{{t}}}[{RATE}])) * 60", "retried"),
                (f"sum(rate(conveyor_jobs_deferred_total{{{t}}}[{RATE}])) * 60", "deferred"),
            ),
            "opm",
        )
    )
    panels.append(
        timeseries(
            lay,
            "Success ratio",
            "succeeded / (succeeded + failed).",
            targets((success_ratio(t), "{{type}}")),
            "percentunit",
            max_value=1,
        )
    )
    panels.append(
        timeseries(
            lay,
            "Queue and replicas",
            "conveyor.$type: ready (waiting) and unacknowledged (running) messages; worker "
            "pods and RabbitMQ consumers on the right axis.",
            targets(
                (f"sum(rabbitmq_detailed_queue_messages_ready{{{queue}}})", "ready"),
                (f"sum(rabbitmq_detailed_queue_messages_unacked{{{queue}}})", "unacked"),
                (f"sum(conveyor_worker_up{{{t}}})", "worker replicas"),
                (f"sum(rabbitmq_detailed_queue_consumers{{{queue}}})", "consumer replicas"),
            ),
            "none",
            overrides=[right_axis(".* replicas")],
        )
    )
    panels.append(
        timeseries(
            lay,
            "Jobs in flight",
            "Jobs running now, across every pod and pool process.",
            targets((f"sum(conveyor_jobs_in_progress{{{t}}})", "running")),
            "none",
        )
    )
    panels.append(row(lay, "$type wait and run time"))
    panels.append(
        timeseries(
            lay,
            "Queue wait percentiles",
            "Submission to start.",
            targets(
                *(
                    (quantile(q, "conveyor_job_queue_wait_seconds", t), f"p{int(q * 100)}")
                    for q in (0.5, 0.9, 0.99)
                )
            ),
            "s",
        )
    )
    panels.append(
        timeseries(
            lay,
            "Run time percentiles",
            "Start to outcome (succeeded, failed or cancelled).",
            targets(
                *(
                    (quantile(q, "conveyor_job_run_duration_seconds", t), f"p{int(q * 100)}")
                    for q in (0.5, 0.9, 0.99)
                )
            ),
            "s",
        )
    )
    heatmap = {
        "datasource": DATASOURCE,
        "description": "Jobs that finished per run-time bucket (seconds to hours).",
        "fieldConfig": {"defaults": {}, "overrides": []},
        "gridPos": lay.place(24, 8),
        "id": lay.take_id(),
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "yAxis": {"unit": "s"},
            "rowsFrame": {"layout": "auto"},
        },
        "targets": [
            target(
                f"sum by (le) (increase(conveyor_job_run_duration_seconds_bucket{{{t}}}[{RATE}]))",
                "{{le}}",
                "A",
                format="heatmap",
            )
        ],
        "title": "Run time distribution",
        "type": "heatmap",
    }
    panels.append(heatmap)
    type_variable = {
        "current": {},
        "datasource": DATASOURCE,
        "definition": "label_values(conveyor_jobs_submitted_total, type)",
        "hide": 0,
        "label": "Job type",
        "name": "type",
        "options": [],
        "query": {
            "qryType": 1,
            "query": "label_values(conveyor_jobs_submitted_total, type)",
            "refId": "PrometheusVariableQueryEditor-VariableQuery",
        },
        "refresh": 2,
        "sort": 1,
        "type": "query",
    }
    return dashboard(
        "conveyor-job-type",
        "Conveyor / Job type",
        "One job type in depth: its queue, its workers, outcomes, wait and run time.",
        panels,
        [datasource_variable(), type_variable],
    )


DASHBOARDS = {"conveyor-overview": overview, "conveyor-job-type": job_type}


# --- what tests and the preview read


def panel_queries(board: Dashboard) -> Iterator[tuple[Panel, dict[str, Any]]]:
    """(panel, target) for every query of every panel."""
    for panel in board["panels"]:
        for query in panel.get("targets", []):
            yield panel, query


def variable_queries(board: Dashboard) -> list[str]:
    """The label_values(...) queries of the dashboard's query variables."""
    return [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]


# --- output


def render_json(board: Dashboard) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def render_chart_template() -> str:
    """Named templates with each dashboard's JSON as a Go raw string (no escaping needed)."""
    parts = [
        "{{- /*\n"
        "Generated by `make dashboards` (deploy/grafana/build.py). Do not edit: change the\n"
        "generator and regenerate (tests fail when this file drifts).\n"
        "*/ -}}\n"
    ]
    for uid, build in DASHBOARDS.items():
        text = render_json(build())
        assert "`" not in text, f"{uid}: a backtick would end the Go raw string"
        parts.append(
            f'{{{{- define "conveyor.dashboard.{uid}" -}}}}\n{{{{`{text}`}}}}\n{{{{- end }}}}\n'
        )
    return "".join(parts)


def outputs() -> dict[Path, str]:
    files = {OUT_DIR / f"{uid}.json": render_json(build()) for uid, build in DASHBOARDS.items()}
    files[CHART_TEMPLATE] = render_chart_template()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path.relative_to(REPO)))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print("out of date (run `make dashboards`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
