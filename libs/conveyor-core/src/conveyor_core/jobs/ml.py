"""`ml.train`: fit a scikit-learn classifier and keep the fitted model as an artifact."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from conveyor_core.artifact_paths import ArtifactPath
from conveyor_core.jobs.base import JobType, LimitExceeded, StrictModel
from conveyor_core.settings import Settings

Dataset = Literal["iris", "digits", "wine", "breast_cancer", "synthetic", "file"]


class LogisticRegressionHyperparameters(StrictModel):
    C: float = Field(default=1.0, gt=0, le=1e6, description="Inverse regularisation strength.")
    max_iter: int = Field(default=500, ge=1, le=100_000)
    class_weight: Literal["balanced"] | None = None


class RandomForestHyperparameters(StrictModel):
    n_estimators: int = Field(default=100, ge=1, le=5_000)
    max_depth: int | None = Field(default=None, ge=1, le=200)
    min_samples_leaf: int = Field(default=1, ge=1, le=10_000)
    max_features: Literal["sqrt", "log2"] | None = "sqrt"
    class_weight: Literal["balanced"] | None = None


class GradientBoostingHyperparameters(StrictModel):
    n_estimators: int = Field(default=100, ge=1, le=5_000)
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    max_depth: int = Field(default=3, ge=1, le=32)
    subsample: float = Field(default=1.0, gt=0, le=1)


class _TrainCommon(StrictModel):
    dataset: Dataset = Field(
        default="iris",
        description="A data set shipped by scikit-learn, `synthetic` (make_classification) "
        "or `file` (CSV/Parquet from the artifact store, see `source`).",
    )
    n_samples: int = Field(default=1_000, ge=20, le=5_000_000, description="synthetic only")
    n_features: int = Field(default=20, ge=2, le=1_000, description="synthetic only")
    n_classes: int = Field(default=2, ge=2, le=20, description="synthetic only")
    source: ArtifactPath | None = Field(default=None, description="file only: CSV or Parquet")
    target_column: str = Field(default="target", max_length=128, description="file only")
    test_size: float = Field(default=0.25, gt=0, lt=1)
    cv_folds: int = Field(
        default=0, ge=0, le=20, description="Cross-validation folds before the final fit (0: none)."
    )
    random_state: int = Field(default=0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _source_matches_dataset(self) -> _TrainCommon:
        if self.dataset == "file" and self.source is None:
            raise ValueError("dataset 'file' needs `source`, a CSV or Parquet artifact path")
        if self.dataset != "file" and self.source is not None:
            raise ValueError("`source` is only read when dataset is 'file'")
        if self.cv_folds == 1:
            raise ValueError("cv_folds must be 0 (no cross-validation) or at least 2")
        return self


class LogisticRegressionTrain(_TrainCommon):
    model: Literal["logistic_regression"]
    hyperparameters: LogisticRegressionHyperparameters = LogisticRegressionHyperparameters()


class RandomForestTrain(_TrainCommon):
    model: Literal["random_forest"]
    hyperparameters: RandomForestHyperparameters = RandomForestHyperparameters()


class GradientBoostingTrain(_TrainCommon):
    model: Literal["gradient_boosting"]
    hyperparameters: GradientBoostingHyperparameters = GradientBoostingHyperparameters()


TrainParams = Annotated[
    LogisticRegressionTrain | RandomForestTrain | GradientBoostingTrain,
    Field(discriminator="model"),
]


class ClassReport(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class TrainTimings(BaseModel):
    load_s: float
    cv_s: float
    fit_s: float
    evaluate_s: float
    total_s: float


class TrainResult(BaseModel):
    model: str
    dataset: str
    n_train: int
    n_test: int
    n_features: int
    classes: list[str]
    accuracy: float
    f1_macro: float
    per_class: dict[str, ClassReport]
    cv_scores: list[float] = Field(default_factory=list)
    timings: TrainTimings
    artifact: str = Field(description="Name of the fitted model artifact (skops format).")


# The features as float64, then the train/test split's copy, then the fit's working set.
DATASET_COPIES = 3


def dataset_bytes(n_samples: int, n_features: int) -> int:
    """What a data set of this shape takes in a training worker, by DATASET_COPIES."""
    return n_samples * n_features * 8 * DATASET_COPIES


def over_memory_budget(n_samples: int, n_features: int, settings: Settings) -> str | None:
    """Why a data set of this shape does not fit the budget, or None if it does."""
    needed = dataset_bytes(n_samples, n_features)
    if needed <= settings.ml_memory_budget_bytes:
        return None
    mib = 1024**2
    return (
        f"{n_samples} samples x {n_features} features need about {needed // mib} MiB to "
        f"train; the limit is {settings.ml_memory_budget_bytes // mib} MiB "
        "(CONVEYOR_ML_MEMORY_BUDGET_BYTES)"
    )


def admit_train(params: _TrainCommon, settings: Settings) -> None:
    if params.dataset != "synthetic":
        return
    if params.n_samples > settings.ml_max_samples:
        raise LimitExceeded(
            f"params.n_samples {params.n_samples} exceeds the limit of {settings.ml_max_samples}"
        )
    too_large = over_memory_budget(params.n_samples, params.n_features, settings)
    if too_large is not None:
        raise LimitExceeded(f"params: {too_large}")


ML_TRAIN = JobType(
    name="ml.train",
    worker="ml",
    params=TrainParams,
    result=TrainResult,
    summary="Train a scikit-learn classifier; the fitted model becomes an artifact.",
    example={
        "dataset": "iris",
        "model": "logistic_regression",
        "hyperparameters": {"C": 1.0, "max_iter": 500},
        "test_size": 0.25,
        "random_state": 0,
    },
    soft_time_limit_s=6 * 3600,
    time_limit_s=6 * 3600 + 120,
    admit=admit_train,
    input_artifacts=("source",),
)
