"""Draw the overview dashboard's main panels from real data, as the on-call person sees them.

Input: the range-query data tests/observability writes after its workload (same queries as
deploy/grafana/conveyor-overview.json, `$__rate_interval` set to a short window). Output: a
PNG. Run by `make dashboards-preview`; needs matplotlib (`uv run --with matplotlib==...`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, MaxNLocator

TYPE_COLOURS = {"ml.train": "#3274d9", "cmd.run": "#ff780a", "data.transform": "#56a64b"}
VARIANT_STYLES = {
    "submitted": "-",
    "succeeded": "--",
    "failed": ":",
    "p50": "--",
    "p95": "-",
    "depth": "-",
    "replicas": "-",
}
UNIT_LABELS = {
    "opm": "jobs / min",
    "percentunit": "success ratio",
    "s": "seconds",
    "none": "jobs",
}


def _style(legend: str) -> tuple[str, str]:
    job_type, _, variant = legend.partition(" ")
    colour = TYPE_COLOURS.get(job_type, "#8e8e8e")
    return colour, VARIANT_STYLES.get(variant, "-")


def _values(points: list[list[float]]) -> tuple[list[float], list[float]]:
    xs = [p[0] for p in points]
    ys = [p[1] if math.isfinite(p[1]) else math.nan for p in points]
    return xs, ys


def draw_panel(ax: Any, panel: dict[str, Any]) -> None:
    right_patterns = [re.compile(p) for p in panel["right_axis"]]
    right = None
    rights = [s for s in panel["series"] if any(p.fullmatch(s["legend"]) for p in right_patterns)]
    for series in sorted(panel["series"], key=lambda s: s["legend"]):
        colour, style = _style(series["legend"])
        xs, ys = _values(series["points"])
        if any(p.fullmatch(series["legend"]) for p in right_patterns):
            right = right or ax.twinx()
            right.step(
                xs,
                ys,
                where="post",
                color=colour,
                linestyle=(0, (4, 2)),
                linewidth=2.2,
                alpha=0.9,
                label=series["legend"],
            )
        else:
            ax.plot(xs, ys, color=colour, linestyle=style, linewidth=1.8, label=series["legend"])
            if panel["unit"] == "none" and not right_patterns:  # stacked in Grafana: filled
                ax.fill_between(xs, ys, color=colour, alpha=0.15)
    ax.set_title(panel["title"], loc="left", fontsize=13, fontweight="bold")
    ax.set_ylabel(UNIT_LABELS.get(panel["unit"], panel["unit"]))
    ax.set_xlabel("seconds into the workload")
    ax.grid(True, alpha=0.3)
    # Headroom above the data for the legend, so it never hides a line.
    finite = [
        v for s in panel["series"] for _, v in s["points"] if math.isfinite(v) and s not in rights
    ]
    ax.set_ylim(0, max(max(finite, default=1) * 1.45, 1))
    if panel["unit"] == "percentunit":
        ax.set_ylim(0, 1.05)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:
        top = max((v for s in rights for _, v in s["points"] if math.isfinite(v)), default=1)
        right.set_ylim(0, max(top * 1.45, top + 1))
        right.yaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_ylabel("worker replicas (dashed)")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(
        handles,
        labels,
        fontsize=8.5,
        ncol=3 if len(labels) > 6 else 2,
        loc="upper left",
        framealpha=0.85,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="JSON written by tests/observability")
    parser.add_argument("png", type=Path)
    args = parser.parse_args()
    data = json.loads(args.data.read_text())
    panels = data["panels"]
    rows = math.ceil(len(panels) / 2)
    fig, axes = plt.subplots(rows, 2, figsize=(17, 5.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        draw_panel(ax, panel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        "Conveyor / Overview, main panels: a real local run scraped by Prometheus "
        f"(1 s scrape, rate window {data['rate_interval']})",
        fontsize=15,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=90)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
