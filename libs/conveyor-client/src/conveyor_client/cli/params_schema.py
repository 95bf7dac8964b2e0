"""A job type's params JSON Schema, summarised as rows a person reads (`conveyor types`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "null"}


@dataclass(frozen=True)
class Param:
    name: str  # dotted for nested objects: hyperparameters.n_estimators
    type: str
    required: bool
    default: str  # as JSON; "" when there is none
    description: str


@dataclass
class ParamVariant:
    """One shape of params; `label` names the discriminator value (model=random_forest)."""

    label: str
    params: list[Param] = field(default_factory=list)


class _Schema:
    def __init__(self, root: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = root.get("$defs", {})

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            resolved: dict[str, Any] = self.defs.get(ref.removeprefix("#/$defs/"), {})
            return resolved
        return node

    def type_of(self, node: dict[str, Any]) -> str:
        node = self.resolve(node)
        if "const" in node:
            return json.dumps(node["const"])
        if "enum" in node:
            return "|".join(str(value) for value in node["enum"])
        for key in ("anyOf", "oneOf"):
            if key in node:
                kinds = [self.type_of(option) for option in node[key]]
                return " or ".join(kind for kind in kinds if kind != "null") or "null"
        kind = node.get("type")
        if kind == "array":
            items = node.get("items")
            return f"list[{self.type_of(items)}]" if isinstance(items, dict) else "list"
        if kind == "object" or "properties" in node:
            return str(node.get("title", "object"))
        if isinstance(kind, str):
            return SCALARS.get(kind, kind) + _bounds(node)
        return "any"

    def params(self, node: dict[str, Any], prefix: str = "") -> list[Param]:
        node = self.resolve(node)
        required = set(node.get("required", []))
        rows = []
        for name, prop in node.get("properties", {}).items():
            default = json.dumps(prop["default"]) if "default" in prop else ""
            rows.append(
                Param(
                    name=prefix + name,
                    type=self.type_of(prop),
                    required=name in required,
                    default=default,
                    description=str(prop.get("description", "")),
                )
            )
            nested = self.resolve(prop)
            if "properties" in nested and "$ref" in prop:  # a sub-model: show its fields too
                rows.extend(self.params(nested, prefix=f"{prefix}{name}."))
        return rows


def _bounds(node: dict[str, Any]) -> str:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    if low is None and high is None:
        return ""
    return f" {'' if low is None else low}..{'' if high is None else high}"


def describe_params(schema: dict[str, Any]) -> list[ParamVariant]:
    """The params of each variant of a schema (one variant unless it is a tagged union)."""
    reader = _Schema(schema)
    variants = schema.get("oneOf")
    if not isinstance(variants, list):
        return [ParamVariant(label="", params=reader.params(schema))]
    discriminator = schema.get("discriminator", {})
    tag = discriminator.get("propertyName", "")
    labels = {ref: value for value, ref in discriminator.get("mapping", {}).items()}
    return [
        ParamVariant(
            label=f"{tag}={labels[variant['$ref']]}" if variant.get("$ref") in labels else "",
            params=reader.params(variant),
        )
        for variant in variants
    ]


def param_names(schema: dict[str, Any]) -> list[str]:
    """Top-level param names across variants, required ones marked with `*`."""
    seen: dict[str, bool] = {}
    for variant in describe_params(schema):
        for param in variant.params:
            if "." not in param.name:
                seen[param.name] = seen.get(param.name, False) or param.required
    return [f"{name}*" if required else name for name, required in seen.items()]
