"""Generate the reference pages from the code, so they cannot drift: `make docs`.

- docs/job-types.md from each job type's params and result models (conveyor_core.jobs)
- docs/configuration.md from conveyor_core.settings.Settings, with where the Helm chart
  sets each one

`python docs/build.py --check` fails when a committed page differs from what it would write
(tests/core/test_docs.py runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from conveyor_core.jobs import JOB_TYPES
from conveyor_core.jobs.base import JobType
from conveyor_core.settings import Settings
from pydantic import SecretStr
from pydantic_core import to_jsonable_python

DOCS = Path(__file__).parent

# Settings the chart does not take from `config:` but sets itself, and from which value.
CHART_SETS = {
    "broker_url": "Secret (`secrets.brokerUrl` or `secrets.existingSecret`)",
    "database_url": "Secret (`secrets.databaseUrl` or `secrets.existingSecret`)",
    "artifact_url": "`artifacts.url`, else `artifacts.mountPath` on a shared volume",
    "api_host": "`0.0.0.0` in the gateway pod",
    "api_port": "`api.port`",
    "auto_migrate": "`false` in gateway pods: the hook Job migrates (`migrations.enabled`)",
    "worker_concurrency": "`workers.<type>.concurrency`",
    "soft_time_limit_s": "`workers.<type>.softTimeLimitSeconds`",
    "time_limit_s": "`workers.<type>.timeLimitSeconds`",
    "metrics_host": "`0.0.0.0` in worker pods",
    "metrics_port": "`workers.<type>.metricsPort`",
    "worker_max_jobs": "`1` in KEDA ScaledJob mode",
    "worker_idle_exit_s": "`workers.<type>.keda.scaledJob.idleExitSeconds` in KEDA ScaledJob mode",
}

CONSTRAINTS = {
    "minimum": ">= {}",
    "exclusiveMinimum": "> {}",
    "maximum": "<= {}",
    "exclusiveMaximum": "< {}",
    "minLength": "length >= {}",
    "maxLength": "length <= {}",
    "minItems": ">= {} items",
    "maxItems": "<= {} items",
    "pattern": "matches `{}`",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_type_of(option) for option in schema[key])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        return "object"
    return str(kind)


def _constraints(schema: dict[str, Any]) -> str:
    found = [fmt.format(schema[key]) for key, fmt in CONSTRAINTS.items() if key in schema]
    for option in schema.get("anyOf", []):
        found += [fmt.format(option[key]) for key, fmt in CONSTRAINTS.items() if key in option]
    return ", ".join(found)


def _model_table(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    rows = ["| field | type | default | limits | meaning |", "|---|---|---|---|---|"]
    for name, field in schema.get("properties", {}).items():
        default = "required" if name in required else f"`{json.dumps(field.get('default'))}`"
        rows.append(
            f"| `{name}` | {_cell(_type_of(field))} | {_cell(default)} | "
            f"{_cell(_constraints(field))} | {_cell(field.get('description', ''))} |"
        )
    return rows


def _models(schema: dict[str, Any], top_title: str) -> list[str]:
    """The top-level model (or union) and every model it refers to, one table each."""
    lines: list[str] = []
    if "properties" in schema:
        lines += _model_table(schema)
    elif "oneOf" in schema or "anyOf" in schema:
        options = schema.get("oneOf") or schema["anyOf"]
        discriminator = schema.get("discriminator", {}).get("propertyName")
        lines.append(
            f"One of the following, chosen by `{discriminator}`:"
            if discriminator
            else "One of the following:"
        )
        lines += [f"- {_type_of(option)}" for option in options]
    for name, definition in sorted(schema.get("$defs", {}).items()):
        lines += ["", f"#### {name}", ""]
        if definition.get("description"):
            lines += [definition["description"].strip(), ""]
        lines += _model_table(definition) if "properties" in definition else [_type_of(definition)]
    return [f"#### {top_title}", "", *lines]


def job_type_section(job_type: JobType) -> list[str]:
    params = job_type.params_adapter.json_schema()
    result = job_type.result.model_json_schema()
    return [
        f"## `{job_type.name}`",
        "",
        job_type.summary,
        "",
        f"- worker service: `services/{job_type.service}`, queue `{job_type.queue}`, "
        f"dead letters in `{job_type.dead_letter_queue}`",
        f"- time limits: soft {job_type.soft_time_limit_s} s, hard {job_type.time_limit_s} s "
        "(CONVEYOR_SOFT_TIME_LIMIT_S / CONVEYOR_TIME_LIMIT_S override them per worker)",
        "",
        "Example:",
        "",
        "```json",
        json.dumps({"type": job_type.name, "params": job_type.example}, indent=2),
        "```",
        "",
        "### Params",
        "",
        *_models(params, params.get("title", "params")),
        "",
        "### Result",
        "",
        *_models(result, result.get("title", "result")),
        "",
    ]


def job_types_page() -> str:
    lines = [
        "# Job types",
        "",
        "<!-- generated by docs/build.py from conveyor_core.jobs: edit the models, then "
        "`make docs` -->",
        "",
        'Submit with `POST /v1/jobs` (`{"type": ..., "params": ...}`), the CLI\'s '
        "`conveyor submit TYPE`, or `GET /v1/job-types` for these schemas as JSON. Unknown "
        "fields are refused (422 naming the field).",
        "",
    ]
    for job_type in JOB_TYPES.values():
        lines += job_type_section(job_type)
    return "\n".join(lines).rstrip() + "\n"


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, dict | list):
        return f"`{json.dumps(to_jsonable_python(value))}`"
    return f"`{value}`"


def configuration_page() -> str:
    lines = [
        "# Configuration",
        "",
        "<!-- generated by docs/build.py from conveyor_core.settings: edit the model, then "
        "`make docs` -->",
        "",
        "Every component reads the same settings from `CONVEYOR_*` environment variables "
        "(pydantic-settings; a `.env` file in the working directory works too). In the Helm "
        "chart, each one is a key under `config:` (rendered into the ConfigMap) unless the "
        "chart column says the chart sets it itself; the chart's `values.schema.json` "
        "accepts exactly these keys, so a typo fails `helm install`.",
        "",
        "| variable | chart | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        chart = CHART_SETS.get(name, f"`config.{name}`")
        lines.append(
            f"| `CONVEYOR_{name.upper()}` | {_cell(chart)} | {_cell(_default(name))} | "
            f"{_cell(field.description or '')} |"
        )
    return "\n".join(lines) + "\n"


PAGES = {
    DOCS / "job-types.md": job_types_page,
    DOCS / "configuration.md": configuration_page,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a page is stale")
    args = parser.parse_args()
    stale = []
    for path, render in PAGES.items():
        text = render()
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(DOCS.parent)))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(DOCS.parent)}")
    if stale:
        print(f"stale: {', '.join(stale)}; run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
