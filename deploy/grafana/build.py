"""Conveyor's Grafana dashboards as code: the source of deploy/grafana/*.json.

Written with Grafana's grafana-foundation-sdk (typed builders for dashboards, panels and
Prometheus queries; a dev dependency pinned in the root pyproject.toml). `make dashboards`
(python deploy/grafana/build.py) writes the JSON files Grafana imports and the chart's
templates/monitoring/_dashboards.tpl, from which the chart makes ConfigMaps for the Grafana
sidecar. `--check` exits 1 when a committed file differs from what this writes;
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

from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    FieldColor,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    DynamicConfigValue,
    FieldColorModeId,
    Threshold,
    ThresholdsMode,
    VariableHide,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "deploy" / "grafana"
CHART_TEMPLATE = (
    REPO / "deploy" / "helm" / "conveyor" / "templates" / "monitoring" / "_dashboards.tpl"
)

# What the builders produce, as Grafana's JSON: what the tests, the preview and the chart read.
PanelJson = dict[str, Any]
DashboardJson = dict[str, Any]

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
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

TYPE_VALUES = "label_values(conveyor_jobs_submitted_total, type)"


# --- panel builders. The dashboard places panels left to right, a new line when a line's
# 24 columns are full, so each builder only sets its panel's size.


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .datasource(DATASOURCE)
        .editor_mode(QueryEditorMode.CODE)
        .expr(expr)
        .legend_format(legend)
        .range()
        .ref_id(ref)
    )


def queries(*pairs: tuple[str, str]) -> list[Builder[Dataquery]]:
    """One query per (expr, legend), ref ids A, B, C..."""
    return [query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def timeseries_panel(
    title: str,
    description: str,
    targets: list[Builder[Dataquery]],
    unit: str,
    width: int = 12,
    stack: bool = False,
) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets)
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
        .draw_style(common.GraphDrawStyle.LINE)
        .fill_opacity(60 if stack else 10)
        .line_width(2)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(
            StackingConfig()
            .group("A")
            .mode(common.StackingMode.NORMAL if stack else common.StackingMode.NONE)
        )
        .legend(
            VizLegendOptions()
            # The SDK's default is a hidden legend; Grafana's is a shown one.
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )


def stat_panel(
    title: str,
    description: str,
    expr: str,
    unit: str,
    thresholds: list[tuple[float | None, str]] | None = None,
) -> stat.Panel:
    steps = [
        Threshold(value=value, color=color) for value, color in thresholds or [(None, "green")]
    ]
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, ""))
        .unit(unit)
        .span(4)
        .height(4)
        .color_scheme(FieldColor().mode(FieldColorModeId.THRESHOLDS))
        .thresholds(ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA)
        .text_mode(common.BigValueTextMode.AUTO)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
    )


# Override for series drawn against the right axis as dashed replica counts.
DASHED = common.LineStyle(fill="dash", dash=[10, 10])
RIGHT_AXIS_REPLICAS = [
    DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
    DynamicConfigValue(id_val="custom.lineStyle", value=DASHED),
    DynamicConfigValue(id_val="custom.fillOpacity", value=0),
    DynamicConfigValue(id_val="decimals", value=0),
    DynamicConfigValue(id_val="custom.axisLabel", value="replicas"),
]


def conveyor_dashboard(uid: str, title: str, description: str) -> Dashboard:
    """A dashboard with what both share: tag, link to the other, time range, datasource."""
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["conveyor"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-3h", "now")
        .timezone("browser")
        .refresh("30s")
        .version(1)
        .annotations([])
        .link(
            DashboardLink("Conveyor")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(["conveyor"])
            .as_dropdown(False)
            .include_vars(False)
            .keep_time(True)
        )
        .with_variable(
            DatasourceVariable("datasource")
            .label("Prometheus")
            .type("prometheus")
            .hide(VariableHide.DONT_HIDE)
        )
    )


def to_json(board: Dashboard) -> DashboardJson:
    """The dashboard as Grafana's JSON (plain dicts, through the SDK's encoder). Panels, rows
    included, are numbered in reading order: the SDK leaves ids to us, Grafana wants them."""
    model = board.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    encoded: DashboardJson = json.loads(json.dumps(model, cls=JSONEncoder))
    return encoded


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


def overview() -> DashboardJson:
    board = (
        conveyor_dashboard(
            "conveyor-overview",
            "Conveyor / Overview",
            "Is work flowing, how long do jobs wait and run, what fails, are we scaled right.",
        )
        .with_row(Row("Is work flowing?"))
        .with_panel(
            stat_panel(
                "Submitted / min",
                "Jobs the gateway accepted (202), all types.",
                f"sum(rate(conveyor_jobs_submitted_total[{RATE}])) * 60",
                "none",
            )
        )
        .with_panel(
            stat_panel(
                "Success ratio",
                "succeeded / (succeeded + failed), all types. Cancelled jobs are not counted.",
                f"{OK_ALL} / ({OK_ALL} + {FAILED_ALL})",
                "percentunit",
                thresholds=[(None, "red"), (0.9, "orange"), (0.99, "green")],
            )
        )
        .with_panel(
            stat_panel(
                "Running now",
                "Jobs running now, all types.",
                "sum(conveyor_jobs_in_progress)",
                "none",
            )
        )
        .with_panel(
            stat_panel(
                "Jobs waiting",
                "Ready messages in the job queues (RabbitMQ): submitted, not started.",
                f"sum(rabbitmq_detailed_queue_messages_ready{{{MAIN_QUEUES}}})",
                "none",
                thresholds=[(None, "green"), (50, "orange")],
            )
        )
        .with_panel(
            stat_panel(
                "Worker replicas",
                "Worker pods consuming (conveyor_worker_up), all types.",
                "sum(conveyor_worker_up)",
                "none",
            )
        )
        .with_panel(
            stat_panel(
                "Dead-lettered",
                "Messages in the dead-letter queues: jobs whose worker was lost on every attempt.",
                f"sum(rabbitmq_detailed_queue_messages{{{DEAD_LETTER_QUEUES}}})",
                "none",
                thresholds=[(None, "green"), (1, "red")],
            )
        )
        .with_panel(
            timeseries_panel(
                "Throughput by type",
                "Jobs per minute: accepted by the gateway, and finished by the workers.",
                queries(
                    (f"{rate_by_type('conveyor_jobs_submitted_total')} * 60", "{{type}} submitted"),
                    (f"{rate_by_type('conveyor_jobs_succeeded_total')} * 60", "{{type}} succeeded"),
                    (f"{rate_by_type('conveyor_jobs_failed_total')} * 60", "{{type}} failed"),
                ),
                "opm",
            )
        )
        .with_panel(
            timeseries_panel(
                "Success ratio by type",
                "succeeded / (succeeded + failed) per job type; gaps: nothing finished.",
                queries((success_ratio(), "{{type}}")),
                "percentunit",
            ).max(1)
        )
        .with_row(Row("Are we scaled right?"))
        .with_panel(
            timeseries_panel(
                "Queue depth vs replicas",
                "Messages per job queue (ready + unacknowledged, i.e. waiting + running) against "
                "the worker pods consuming it (right axis). Depth rising while replicas stay "
                "flat: KEDA at maxReplicaCount or pods not starting.",
                queries(
                    (by_type("rabbitmq_detailed_queue_messages"), "{{type}} depth"),
                    (REPLICAS, "{{type}} replicas"),
                ),
                "none",
            ).override_by_regexp(".* replicas", RIGHT_AXIS_REPLICAS)
        )
        .with_panel(
            timeseries_panel(
                "Jobs in flight",
                "Jobs running now per type, across every worker pod and pool process.",
                queries(("sum by (type) (conveyor_jobs_in_progress)", "{{type}}")),
                "none",
                stack=True,
            )
        )
        .with_row(Row("How long do jobs wait and run?"))
        .with_panel(
            timeseries_panel(
                "Queue wait p50 / p95",
                "Submission to start, per type (jobs that started in the interval).",
                queries(
                    (quantile(0.5, "conveyor_job_queue_wait_seconds"), "{{type}} p50"),
                    (quantile(0.95, "conveyor_job_queue_wait_seconds"), "{{type}} p95"),
                ),
                "s",
            )
        )
        .with_panel(
            timeseries_panel(
                "Run time p50 / p95",
                "Start to outcome, per type (jobs that finished in the interval).",
                queries(
                    (quantile(0.5, "conveyor_job_run_duration_seconds"), "{{type}} p50"),
                    (quantile(0.95, "conveyor_job_run_duration_seconds"), "{{type}} p95"),
                ),
                "s",
            )
        )
        .with_row(Row("What fails?"))
        .with_panel(
            timeseries_panel(
                "Failed, cancelled, retried / min",
                "Failed: the job ended failed. Cancelled: stopped on request while running. "
                "Retried: started again after its worker was lost.",
                queries(
                    (f"{rate_by_type('conveyor_jobs_failed_total')} * 60", "{{type}} failed"),
                    (f"{rate_by_type('conveyor_jobs_cancelled_total')} * 60", "{{type}} cancelled"),
                    (f"{rate_by_type('conveyor_jobs_retried_total')} * 60", "{{type}} retried"),
                ),
                "opm",
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Submissions rejected / min",
                "Refused submissions by reason: validation (422), forbidden (403), limit, "
                "idempotency_conflict (409), broker_unavailable / store_unavailable (503).",
                queries(
                    (
                        f"sum by (reason) (rate(conveyor_submissions_rejected_total[{RATE}])) * 60",
                        "{{reason}}",
                    )
                ),
                "opm",
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Gateway answers by status / s",
                "Every HTTP answer of the gateway by status code. 5xx: see the "
                "ConveyorGatewayErrorRatioHigh runbook.",
                queries(
                    (
                        f"sum by (status) (rate(conveyor_http_requests_total[{RATE}]))",
                        "{{status}}",
                    )
                ),
                "reqps",
                width=8,
                stack=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Gateway latency p95 by route",
                "Time to answer, by route template.",
                queries(
                    (
                        quantile(
                            0.95, "conveyor_http_request_duration_seconds", by="route, method"
                        ),
                        "{{method}} {{route}}",
                    )
                ),
                "s",
            )
        )
        .with_panel(
            timeseries_panel(
                "Publish to confirm p95 / broker connected",
                "Time from publishing a job to RabbitMQ's publisher confirm, by type; and "
                "whether the gateway is connected to RabbitMQ (1) or not (0).",
                queries(
                    (quantile(0.95, "conveyor_publish_duration_seconds"), "{{type}} publish p95"),
                    ("min(conveyor_gateway_broker_connected)", "broker connected"),
                ),
                "s",
            ).override_by_name(
                "broker connected",
                [
                    DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
                    DynamicConfigValue(id_val="unit", value="bool"),
                    DynamicConfigValue(id_val="max", value=1),
                ],
            )
        )
    )
    return to_json(board)


def job_type() -> DashboardJson:
    t = 'type="$type"'
    queue = 'queue="conveyor.$type"'
    board = (
        conveyor_dashboard(
            "conveyor-job-type",
            "Conveyor / Job type",
            "One job type in depth: its queue, its workers, outcomes, wait and run time.",
        )
        .with_variable(
            QueryVariable("type")
            .label("Job type")
            .datasource(DATASOURCE)
            .query(
                {
                    "qryType": 1,
                    "query": TYPE_VALUES,
                    "refId": "PrometheusVariableQueryEditor-VariableQuery",
                }
            )
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .hide(VariableHide.DONT_HIDE)
        )
        .with_row(Row("$type now"))
        .with_panel(
            stat_panel(
                "Waiting",
                "Ready messages in conveyor.$type.",
                f"sum(rabbitmq_detailed_queue_messages_ready{{{queue}}})",
                "none",
            )
        )
        .with_panel(
            stat_panel(
                "Running",
                "Jobs running now (conveyor_jobs_in_progress).",
                f"sum(conveyor_jobs_in_progress{{{t}}})",
                "none",
            )
        )
        .with_panel(
            stat_panel(
                "Replicas",
                "Worker pods of this type consuming (conveyor_worker_up).",
                f"sum(conveyor_worker_up{{{t}}})",
                "none",
            )
        )
        .with_panel(
            stat_panel(
                "Consumers",
                "Consumers RabbitMQ counts on conveyor.$type (one per worker pod).",
                f"sum(rabbitmq_detailed_queue_consumers{{{queue}}})",
                "none",
            )
        )
        .with_panel(
            stat_panel(
                "Since last success",
                "Time since a job of this type last succeeded.",
                f"time() - max(conveyor_job_last_success_timestamp_seconds{{{t}}})",
                "s",
            )
        )
        .with_panel(
            stat_panel(
                "Dead-lettered",
                "Messages in conveyor.$type.dead-letter.",
                'sum(rabbitmq_detailed_queue_messages{queue="conveyor.$type.dead-letter"})',
                "none",
                thresholds=[(None, "green"), (1, "red")],
            )
        )
        .with_panel(
            timeseries_panel(
                "Jobs / min by outcome",
                "Submitted (gateway), started, succeeded, failed, cancelled, retried (workers). "
                "Deferred: sent to the back of the queue, its key at "
                "CONVEYOR_MAX_RUNNING_PER_KEY.",
                queries(
                    *(
                        (f"sum(rate(conveyor_jobs_{outcome}_total{{{t}}}[{RATE}])) * 60", outcome)
                        for outcome in (
                            "submitted",
                            "started",
                            "succeeded",
                            "failed",
                            "cancelled",
                            "retried",
                            "deferred",
                        )
                    )
                ),
                "opm",
            )
        )
        .with_panel(
            timeseries_panel(
                "Success ratio",
                "succeeded / (succeeded + failed).",
                queries((success_ratio(t), "{{type}}")),
                "percentunit",
            ).max(1)
        )
        .with_panel(
            timeseries_panel(
                "Queue and replicas",
                "conveyor.$type: ready (waiting) and unacknowledged (running) messages; worker "
                "pods and RabbitMQ consumers on the right axis.",
                queries(
                    (f"sum(rabbitmq_detailed_queue_messages_ready{{{queue}}})", "ready"),
                    (f"sum(rabbitmq_detailed_queue_messages_unacked{{{queue}}})", "unacked"),
                    (f"sum(conveyor_worker_up{{{t}}})", "worker replicas"),
                    (f"sum(rabbitmq_detailed_queue_consumers{{{queue}}})", "consumer replicas"),
                ),
                "none",
            ).override_by_regexp(".* replicas", RIGHT_AXIS_REPLICAS)
        )
        .with_panel(
            timeseries_panel(
                "Jobs in flight",
                "Jobs running now, across every pod and pool process.",
                queries((f"sum(conveyor_jobs_in_progress{{{t}}})", "running")),
                "none",
            )
        )
        .with_row(Row("$type wait and run time"))
        .with_panel(
            timeseries_panel(
                "Queue wait percentiles",
                "Submission to start.",
                queries(
                    *(
                        (quantile(q, "conveyor_job_queue_wait_seconds", t), f"p{int(q * 100)}")
                        for q in (0.5, 0.9, 0.99)
                    )
                ),
                "s",
            )
        )
        .with_panel(
            timeseries_panel(
                "Run time percentiles",
                "Start to outcome (succeeded, failed or cancelled).",
                queries(
                    *(
                        (quantile(q, "conveyor_job_run_duration_seconds", t), f"p{int(q * 100)}")
                        for q in (0.5, 0.9, 0.99)
                    )
                ),
                "s",
            )
        )
        .with_panel(
            heatmap.Panel()
            .title("Run time distribution")
            .description("Jobs that finished per run-time bucket (seconds to hours).")
            .datasource(DATASOURCE)
            .with_target(
                query(
                    f"sum by (le) (increase(conveyor_job_run_duration_seconds_bucket{{{t}}}"
                    f"[{RATE}]))",
                    "{{le}}",
                ).format(PromQueryFormat.HEATMAP)
            )
            .span(24)
            .height(8)
            .calculate(False)
            .cell_gap(1)
            .color(
                heatmap.HeatmapColorOptions()
                .mode(HeatmapColorMode.SCHEME)
                .scheme("Oranges")
                .steps(64)
                # The builder starts from zero values, not Grafana's defaults: restate them.
                .fill("dark-orange")
                .exponent(0.5)
            )
            .y_axis(heatmap.YAxisConfig().unit("s"))
            .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.AUTO))
        )
    )
    encoded = to_json(board)
    # Escape hatch: the SDK's variable model has no `definition`, the query text Grafana's
    # variable list shows for a query variable.
    for variable in encoded["templating"]["list"]:
        if variable["name"] == "type":
            variable["definition"] = TYPE_VALUES
    return encoded


DASHBOARDS = {"conveyor-overview": overview, "conveyor-job-type": job_type}


# --- what tests and the preview read


def panel_queries(board: DashboardJson) -> Iterator[tuple[PanelJson, dict[str, Any]]]:
    """(panel, target) for every query of every panel."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def variable_queries(board: DashboardJson) -> list[str]:
    """The label_values(...) queries of the dashboard's query variables."""
    return [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]


# --- output


def render_json(board: DashboardJson) -> str:
    # Sorted keys: the files do not change when the SDK reorders the fields it writes.
    return json.dumps(board, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


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
