"""The options every command shares, and how `--param key=value` is read."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="CONVEYOR_URL",
        help="Gateway base URL [default: http://127.0.0.1:8000].",
        show_envvar=True,
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="CONVEYOR_API_KEY",
        help="API key (cnv_...), sent as a Bearer token.",
        show_envvar=True,
        show_default=False,
    ),
]
OutputOpt = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        envvar="CONVEYOR_OUTPUT",
        help="`table` for people, `json` for scripts.",
        case_sensitive=False,
    ),
]


def parse_param(text: str) -> tuple[str, Any]:
    """`key=value`: the value as JSON when it is valid JSON, else as the plain string.

    So `n_samples=50` is the integer 50, `args=["-n","3"]` a list, `dataset=iris` the
    string "iris"; `name='"42"'` forces the string "42".
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise typer.BadParameter(f"{text!r} is not key=value", param_hint="--param")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def build_params(pairs: list[str], params_file: Path | None) -> dict[str, Any]:
    """The job's params: the file's object (if any), then each --param over it."""
    params: dict[str, Any] = {}
    if params_file is not None:
        try:
            loaded = json.loads(params_file.read_text())
        except (OSError, ValueError) as error:
            raise typer.BadParameter(
                f"cannot read {params_file}: {error}", param_hint="--params-file"
            ) from error
        if not isinstance(loaded, dict):
            raise typer.BadParameter(
                f"{params_file} must hold a JSON object", param_hint="--params-file"
            )
        params.update(loaded)
    for pair in pairs:
        key, value = parse_param(pair)
        set_nested(params, key, value)
    return params


def set_nested(params: dict[str, Any], dotted_key: str, value: Any) -> None:
    """`hyperparameters.n_estimators=50` sets params["hyperparameters"]["n_estimators"]."""
    *parents, leaf = dotted_key.split(".")
    node = params
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise typer.BadParameter(
                f"{dotted_key!r}: {part!r} is already set to a non-object value",
                param_hint="--param",
            )
        node = child
    node[leaf] = value
