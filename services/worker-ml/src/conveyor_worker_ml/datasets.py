"""Load the data a training job asks for: a bundled scikit-learn set, a synthetic one or a file.

Every refusal is a JobFailed whose message tells the caller what to change.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import polars as pl
from conveyor_core.artifact_paths import UnsafePathError
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs.ml import TrainParams, over_memory_budget
from conveyor_core.settings import Settings
from conveyor_core.worker import JobContext, JobFailed
from numpy.typing import NDArray
from sklearn.datasets import (
    load_breast_cancer,
    load_digits,
    load_iris,
    load_wine,
    make_classification,
)
from sklearn.utils.multiclass import type_of_target

# Shipped inside the scikit-learn wheel: loading them never touches the network.
_BUNDLED: dict[str, Callable[[], Any]] = {
    "iris": load_iris,
    "digits": load_digits,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
}

_READERS: dict[str, Callable[..., pl.DataFrame]] = {
    ".csv": pl.read_csv,
    ".parquet": pl.read_parquet,
}


@dataclass(frozen=True)
class LoadedDataset:
    """Features, targets, and the classes in a stable order with their display names."""

    features: NDArray[np.float64]
    target: NDArray[Any]
    class_labels: NDArray[Any]
    class_names: list[str]


def load_dataset(params: TrainParams, ctx: JobContext) -> LoadedDataset:
    """Return the data set named by `params.dataset`."""
    if params.dataset == "synthetic":
        return make_synthetic(params, ctx.settings)
    if params.dataset == "file":
        assert params.source is not None  # the params model insists on it
        return load_table(params.source, params.target_column, ctx.artifacts, ctx.settings)
    return load_bundled(params.dataset)


@functools.cache
def load_bundled(name: str) -> LoadedDataset:
    """One of scikit-learn's bundled sets, with its own class names.

    Parsed once per process (a few hundred KB each) rather than on every job: a small
    job's fit takes a few ms. Read-only, so that no job can change the next one's data.
    """
    bunch = _BUNDLED[name]()
    labels = np.unique(bunch.target)
    names = [str(bunch.target_names[label]) for label in labels]
    dataset = LoadedDataset(bunch.data.astype(np.float64), bunch.target, labels, names)
    for array in (dataset.features, dataset.target, dataset.class_labels):
        array.flags.writeable = False
    return dataset


def make_synthetic(params: TrainParams, settings: Settings) -> LoadedDataset:
    """A make_classification set sized by the caller, within the worker's sample cap."""
    if params.n_samples > settings.ml_max_samples:
        raise JobFailed(
            f"n_samples={params.n_samples} is above this worker's limit of "
            f"{settings.ml_max_samples} (CONVEYOR_ML_MAX_SAMPLES)"
        )
    too_large = over_memory_budget(params.n_samples, params.n_features, settings)
    if too_large is not None:
        raise JobFailed(too_large)
    n_informative, n_clusters = _informative_shape(params.n_features, params.n_classes)
    features, target = make_classification(
        n_samples=params.n_samples,
        n_features=params.n_features,
        n_informative=n_informative,
        n_redundant=min(2, params.n_features - n_informative),
        n_repeated=0,
        n_classes=params.n_classes,
        n_clusters_per_class=n_clusters,
        random_state=params.random_state,
    )
    labels = np.arange(params.n_classes)
    return LoadedDataset(features, target, labels, [str(label) for label in labels])


def _informative_shape(n_features: int, n_classes: int) -> tuple[int, int]:
    """Informative features and clusters per class that make_classification accepts.

    It needs n_classes * n_clusters_per_class <= 2 ** n_informative; prefer two clusters
    per class (its default) and half of the features informative.
    """
    for n_clusters in (2, 1):
        needed = math.ceil(math.log2(n_classes * n_clusters))
        if needed <= n_features:
            return max(needed, n_features // 2), n_clusters
    raise JobFailed(
        f"{n_classes} synthetic classes need at least {math.ceil(math.log2(n_classes))} "
        f"features; n_features is {n_features}"
    )


def load_table(
    source: str, target_column: str, store: ArtifactStore, settings: Settings
) -> LoadedDataset:
    """A CSV or Parquet file from the artifact store: numeric features plus a label column."""
    frame = read_table(source, store)
    if target_column not in frame.columns:
        raise JobFailed(
            f"target column {target_column!r} is not in {source!r}; "
            f"its columns are: {', '.join(frame.columns)}"
        )
    features = _feature_matrix(frame.drop(target_column), source)
    n_samples, n_features = features.shape
    too_large = over_memory_budget(n_samples, n_features, settings)
    if too_large is not None:
        raise JobFailed(f"{source!r}: {too_large}")
    target = _class_labels(frame[target_column], source)
    labels = np.unique(target)
    return LoadedDataset(features, target, labels, [str(label) for label in labels])


def read_table(source: str, store: ArtifactStore) -> pl.DataFrame:
    """Read `source` with polars; refuse other formats, missing files and unreadable content."""
    reader = _READERS.get(PurePosixPath(source).suffix.lower())
    if reader is None:
        raise JobFailed(f"source {source!r} must be a {' or '.join(_READERS)} file")
    try:
        url = store.url(source)
        found = store.exists(source)
    except UnsafePathError as exc:
        raise JobFailed(str(exc)) from exc
    if not found:
        raise JobFailed(f"source {source!r} is not in the artifact store")
    try:
        return reader(url, storage_options=store.storage_options or None)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise JobFailed(f"cannot read {source!r}: {exc}") from exc


def _feature_matrix(features: pl.DataFrame, source: str) -> NDArray[np.float64]:
    if features.width == 0:
        raise JobFailed(f"{source!r} has no feature columns besides the target")
    not_numeric = [
        name
        for name, dtype in features.schema.items()
        if not (dtype.is_numeric() or dtype == pl.Boolean)
    ]
    if not_numeric:
        raise JobFailed(
            f"feature columns must be numeric; not numeric in {source!r}: "
            f"{', '.join(not_numeric)} (encode or drop them before training)"
        )
    matrix = features.cast(pl.Float64).to_numpy()
    # Nulls become NaN here, so one check covers both; most estimators cannot take them.
    missing = [
        name
        for name, column in zip(features.columns, matrix.T, strict=True)
        if np.isnan(column).any()
    ]
    if missing:
        raise JobFailed(f"feature columns with missing values in {source!r}: {', '.join(missing)}")
    return matrix


def _class_labels(column: pl.Series, source: str) -> NDArray[Any]:
    if column.null_count():
        raise JobFailed(f"target column {column.name!r} in {source!r} has missing values")
    target = column.to_numpy()
    kind = type_of_target(target)
    if kind not in ("binary", "multiclass"):
        raise JobFailed(
            f"target column {column.name!r} must hold class labels; its values look {kind}"
        )
    if len(np.unique(target)) < 2:
        raise JobFailed(f"target column {column.name!r} holds a single class; need at least two")
    return target
