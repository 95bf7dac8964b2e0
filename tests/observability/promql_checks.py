"""Turning alert expressions into queries that must return data, and talking to Prometheus.

An alert expression is empty while things are healthy (`ratio > 0.25` has no result when
the ratio is 0.1), so "returns nothing" cannot mean "broken" for it as written. What can
break is the data path: a metric name, a label, a join on labels that the real services do
not export. `data_checks` rewrites an alert expression into queries that return data exactly
when that data path works:

- every comparison becomes a `bool` comparison (`x > 0.25` -> `x > bool 0.25`): instead of
  dropping the series the threshold rejects, it keeps them with the value 0 or 1;
- set operations are split: each operand of `and` / `or` / `unless` is checked on its own
  (an `unless` operand that matches is the healthy case and empties the whole expression),
  and an expression joined only by `and` / `or` is also checked whole, which proves its
  `on (...)` labels match;
- `absent(x)` is empty when healthy; `x` itself is checked instead.

Thresholds, `for` durations and the `or vector(0)` fallbacks are proven by the promtool
unit tests in deploy/prometheus/tests, on synthetic series.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SET_OPERATORS = ("and", "or", "unless")
_COMPARISON = re.compile(r"==|!=|>=|<=|>|<")
_MATCHING = re.compile(r"\s*(on|ignoring)\s*\([^)]*\)")


def _top_level(expr: str) -> list[tuple[int, int]]:
    """(start, end) spans of expr that are outside strings, braces, brackets and parens."""
    spans, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(expr):
        if quote:
            if ch == quote and expr[i - 1] != "\\":
                quote = ""
                if depth == 0:
                    start = i + 1
            continue
        if ch in "\"'`":
            if depth == 0:
                spans.append((start, i))
            quote = ch
        elif ch in "({[":
            if depth == 0:
                spans.append((start, i))
            depth += 1
        elif ch in ")}]":
            depth -= 1
            if depth == 0:
                start = i + 1
    if depth == 0 and not quote:
        spans.append((start, len(expr)))
    return [(a, b) for a, b in spans if b > a]


def with_bool(expr: str) -> str:
    """Every comparison outside label matchers and strings gets the `bool` modifier."""
    out, last = [], 0
    # Comparisons can sit at any depth (inside parentheses too), never inside {} or strings.
    depth_braces, quote = 0, ""
    i = 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == quote and expr[i - 1] != "\\":
                quote = ""
            i += 1
            continue
        if ch in "\"'`":
            quote = ch
        elif ch == "{":
            depth_braces += 1
        elif ch == "}":
            depth_braces -= 1
        elif depth_braces == 0:
            match = _COMPARISON.match(expr, i)
            if match:
                end = match.end()
                rest = expr[end:]
                if not re.match(r"\s*bool\b", rest):
                    out.append(expr[last:end] + " bool")
                    last = end
                i = end
                continue
        i += 1
    out.append(expr[last:])
    return "".join(out)


def split_set_operations(expr: str) -> tuple[list[str], list[str]]:
    """Top-level operands and the set operators between them."""
    cuts: list[tuple[int, int, str]] = []
    for a, b in _top_level(expr):
        for match in re.finditer(r"\b(and|or|unless)\b", expr[a:b]):
            end = a + match.end()
            matching = _MATCHING.match(expr, end)
            if matching:
                end = matching.end()
            cuts.append((a + match.start(), end, match.group(1)))
    operands, operators, last = [], [], 0
    for start, end, op in cuts:
        operands.append(expr[last:start].strip())
        operators.append(op)
        last = end
    operands.append(expr[last:].strip())
    return operands, operators


def _strip_parens(expr: str) -> str | None:
    expr = expr.strip()
    if expr.startswith("(") and expr.endswith(")") and _top_level(expr) == []:
        return expr[1:-1].strip()
    return None


def data_checks(expr: str) -> list[str]:
    """Queries that must each return data for `expr`'s data path to be sound."""
    expr = expr.strip()
    absent = re.fullmatch(r"absent\((.*)\)", expr, re.DOTALL)
    if absent:
        return data_checks(absent.group(1))
    inner = _strip_parens(expr)
    if inner is not None:
        return data_checks(inner)
    operands, operators = split_set_operations(expr)
    if not operators:
        return [with_bool(expr)]
    checks = [check for operand in operands for check in data_checks(operand)]
    checks.append(with_bool(_joined(expr)))
    return checks


def _joined(expr: str) -> str:
    """expr with every `unless <operand>` dropped (keeping its left side), so that its `and`
    / `or` joins can be checked for matching labels."""
    inner = _strip_parens(expr)
    if inner is not None:
        return f"({_joined(inner)})"
    operands, operators = split_set_operations(expr)
    if not operators:
        return expr
    kept, matching = [_joined(operands[0])], []
    for op_text, operand in zip(_operator_texts(expr), operands[1:], strict=True):
        if op_text.split()[0] != "unless":
            matching.append(op_text)
            kept.append(_joined(operand))
    return kept[0] + "".join(
        f" {op} {operand}" for op, operand in zip(matching, kept[1:], strict=True)
    )


def _operator_texts(expr: str) -> list[str]:
    """The set operators of expr as written, with their on (...) / ignoring (...) clause."""
    texts = []
    for a, b in _top_level(expr):
        for match in re.finditer(r"\b(and|or|unless)\b", expr[a:b]):
            end = a + match.end()
            matching = _MATCHING.match(expr, end)
            texts.append(expr[a + match.start() : matching.end() if matching else end].strip())
    return texts


# --- Prometheus


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; raises with Prometheus's own message when it does not parse."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        body = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=30).json()
        if body.get("status") != "success":
            raise AssertionError(f"{expr}\n-> {body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        params = {"query": expr, "start": start, "end": end, "step": step}
        body = httpx.get(f"{self.url}/api/v1/query_range", params=params, timeout=60).json()
        if body.get("status") != "success":
            raise AssertionError(f"{expr}\n-> {body.get('errorType')}: {body.get('error')}")
        result: list[Any] = body["data"]["result"]
        return result

    def api(self, path: str, **params: Any) -> Any:
        body = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30).json()
        assert body.get("status") == "success", body
        return body["data"]

    def wait_until(self, expr: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not has_finite_value(self.query(expr)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no data for {expr} after {timeout}s\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)
