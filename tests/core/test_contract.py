"""The shared contract: one declaration per job type, safe paths, pipeline column checks."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from conveyor_core.artifact_paths import UnsafePathError, check_relative_path
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs import (
    CMD_RUN,
    DATA_TRANSFORM,
    JOB_TYPES,
    ML_TRAIN,
    AdmissionDenied,
    JobType,
)
from conveyor_core.settings import Settings
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


def test_every_job_type_has_its_own_task_and_queue_and_a_valid_example():
    assert len({t.task_name for t in JOB_TYPES.values()}) == len(JOB_TYPES)
    assert len({t.queue for t in JOB_TYPES.values()}) == len(JOB_TYPES)
    for job_type in JOB_TYPES.values():
        assert job_type.task_name == f"conveyor.{job_type.name}"
        job_type.parse_params(job_type.example)
        assert job_type.soft_time_limit_s < job_type.time_limit_s


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../x", "a/../../b", "a//b", "./a", "a\\b", "s3://bucket/x", "", "a\x00"],
)
def test_unsafe_artifact_paths_are_refused(path: str):
    with pytest.raises(UnsafePathError):
        check_relative_path(path)


def test_symlinks_out_of_the_store_are_refused(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    (tmp_path / "secret.csv").write_text("a\n1\n")
    (tmp_path / "store" / "uploads").mkdir()
    (tmp_path / "store" / "uploads" / "link.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(UnsafePathError):
        store.url("uploads/link.csv")
    assert store.url("uploads/fine.csv").endswith("/store/uploads/fine.csv")


def test_data_params_name_an_unknown_column():
    with pytest.raises(ValidationError, match="unknown column 'valeu'"):
        DATA_TRANSFORM.parse_params(
            {
                "rows": [{"value": 1}],
                "steps": [{"op": "filter", "column": "valeu", "cmp": "eq", "value": 1}],
            }
        )


def test_data_params_track_columns_through_rename_compute_and_aggregate():
    params = DATA_TRANSFORM.parse_params(
        {
            "rows": [{"a": 1, "b": 2}],
            "steps": [
                {"op": "rename", "mapping": {"a": "x"}},
                {"op": "compute", "column": "y", "left": "x", "operator": "add", "right": "b"},
                {
                    "op": "aggregate",
                    "group_by": ["x"],
                    "aggregations": [{"column": "y", "func": "sum"}],
                },
                {"op": "select", "columns": ["x", "y_sum"]},
            ],
        }
    )
    assert len(params.steps) == 4
    with pytest.raises(ValidationError, match="unknown column 'a'"):
        DATA_TRANSFORM.parse_params(
            {
                "rows": [{"a": 1}],
                "steps": [
                    {"op": "rename", "mapping": {"a": "x"}},
                    {"op": "select", "columns": ["a"]},
                ],
            }
        )


def test_data_params_need_exactly_one_input_and_known_ops():
    with pytest.raises(ValidationError, match="exactly one"):
        DATA_TRANSFORM.parse_params({"steps": []})
    with pytest.raises(ValidationError, match="explode"):
        DATA_TRANSFORM.parse_params({"rows": [{"a": 1}], "steps": [{"op": "explode"}]})


def test_ml_params_validate_hyperparameters_per_model():
    with pytest.raises(ValidationError, match="n_estimators"):
        ML_TRAIN.parse_params({"model": "random_forest", "hyperparameters": {"n_estimators": 0}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ML_TRAIN.parse_params(
            {"model": "logistic_regression", "hyperparameters": {"n_estimators": 10}}
        )
    with pytest.raises(ValidationError, match="source"):
        ML_TRAIN.parse_params({"model": "logistic_regression", "dataset": "file"})


def test_command_admission_follows_the_catalog_and_limits():
    settings = Settings()
    CMD_RUN.check_admission(CMD_RUN.parse_params({"command": "echo", "args": ["hi"]}), settings)
    for params in (
        {"command": "rm"},
        {"command": "sleep", "args": ["1", "2"]},
        {"command": "echo", "timeout_s": settings.cmd_max_timeout_s + 1},
    ):
        with pytest.raises(AdmissionDenied):
            CMD_RUN.check_admission(CMD_RUN.parse_params(params), settings)
    with pytest.raises(ValidationError):
        CMD_RUN.parse_params({"command": "echo;id"})


def test_limits_come_from_settings():
    small = Settings(max_inline_rows=2, ml_max_samples=100)
    with pytest.raises(AdmissionDenied, match="limit is 2"):
        DATA_TRANSFORM.check_admission(DATA_TRANSFORM.parse_params({"rows": [{"a": 1}] * 3}), small)
    with pytest.raises(AdmissionDenied, match="n_samples"):
        ML_TRAIN.check_admission(
            ML_TRAIN.parse_params(
                {"model": "logistic_regression", "dataset": "synthetic", "n_samples": 101}
            ),
            small,
        )


def test_a_synthetic_set_larger_than_the_memory_budget_is_refused_at_admission():
    settings = Settings()  # defaults: a 2 GiB budget
    largest = {"model": "logistic_regression", "dataset": "synthetic", "n_features": 1_000}
    # 2,000,000 x 1,000 float64 is 16 GB before any copy: within the sample cap, not memory.
    with pytest.raises(
        AdmissionDenied, match=r"need about 45776 MiB.*limit is 2048 MiB"
    ) as refused:
        ML_TRAIN.check_admission(
            ML_TRAIN.parse_params({**largest, "n_samples": 2_000_000}), settings
        )
    assert refused.value.status_code == 422
    fits = ML_TRAIN.parse_params({**largest, "n_samples": 80_000})  # 80,000 x 1,000 x 8 x 3
    ML_TRAIN.check_admission(fits, settings)


def test_s3_artifact_store_builds_urls_under_its_prefix():
    store = ArtifactStore("s3://conveyor-artifacts/prod")  # no request is made to build URLs
    assert not store.is_local
    assert store.url("uploads/k/sales.csv") == "s3://conveyor-artifacts/prod/uploads/k/sales.csv"
    with pytest.raises(UnsafePathError):
        store.url("../other-bucket/x")


def _params_models(annotation: Any) -> list[type[BaseModel]]:
    """The params model classes of a type: the class, or each member of a union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _params_models(arg)]


def _names_an_artifact(field: FieldInfo) -> bool:
    """An ArtifactPath field (its checked path validator), also inside `| None`."""

    def metadata(annotation: Any) -> list[Any]:
        found = list(getattr(annotation, "__metadata__", ()))
        return found + [m for arg in typing.get_args(annotation) for m in metadata(arg)]

    every = [*field.metadata, *metadata(field.annotation)]
    return any(getattr(meta, "func", None) is check_relative_path for meta in every)


@pytest.mark.parametrize("job_type", JOB_TYPES.values(), ids=lambda job_type: job_type.name)
def test_every_artifact_path_a_job_reads_is_declared_on_its_type(job_type: JobType):
    """The gateway checks ownership, and the worker resolves job outputs, of the declared
    fields only: a path field left out would skip both."""
    fields = {
        name
        for model in _params_models(job_type.params)
        for name, field in model.model_fields.items()
        if _names_an_artifact(field)
    }
    assert set(job_type.input_artifacts) == fields
