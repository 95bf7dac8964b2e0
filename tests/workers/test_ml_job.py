"""ml.train with real scikit-learn: data sets, models, progress, cancellation, refusals."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import typing
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import skops.io
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs import ML_TRAIN
from conveyor_core.jobs.ml import TrainParams, TrainResult
from conveyor_core.settings import Settings
from conveyor_core.worker import JobCancelled, JobContext, JobFailed
from conveyor_worker_ml import pool
from conveyor_worker_ml.datasets import load_bundled
from conveyor_worker_ml.job import MODEL_ARTIFACT, run
from sklearn.datasets import load_iris

SMALL_FORESTS = {"n_estimators": 30}


class RecordingContext(JobContext):
    """A real JobContext that keeps every progress report and can cancel after the n-th."""

    def __init__(self, root: Path, cancel_after: int | None = None, **settings: Any) -> None:
        super().__init__(
            uuid.uuid4(), Settings(artifact_url=str(root), **settings), ArtifactStore(str(root))
        )
        self.reports: list[float] = []
        self.cancel_after = cancel_after

    def report_progress(self, fraction: float) -> None:
        self.reports.append(fraction)
        if self.cancel_after is not None and len(self.reports) > self.cancel_after:
            self.request_cancel()
        super().report_progress(fraction)

    def model_path(self) -> Path:
        return Path(self.artifacts.url(self.artifact_path(MODEL_ARTIFACT)))


@pytest.fixture
def ctx(tmp_path: Path) -> RecordingContext:
    return RecordingContext(tmp_path)


def train(ctx: JobContext, **raw: Any) -> TrainResult:
    """Parse like the worker does, then run the job."""
    return run(ML_TRAIN.parse_params(raw), ctx)


def write_iris(tmp_path: Path, name: str) -> str:
    """Iris as a table in the store, species names as the target column; returns its path."""
    iris = load_iris()
    frame = pl.DataFrame(iris.data, schema=[f"f{i}" for i in range(iris.data.shape[1])])
    frame = frame.with_columns(species=pl.Series(iris.target_names[iris.target]))
    (tmp_path / "uploads").mkdir(exist_ok=True)
    target = tmp_path / "uploads" / name
    if name.endswith(".csv"):
        frame.write_csv(target)
    else:
        frame.write_parquet(target)
    return f"uploads/{name}"


def test_iris_logistic_regression_is_accurate_and_stores_a_loadable_model(
    ctx: RecordingContext,
) -> None:
    result = train(ctx, model="logistic_regression", dataset="iris")

    assert result.accuracy >= 0.9
    assert result.classes == ["setosa", "versicolor", "virginica"]
    assert set(result.per_class) == set(result.classes)
    assert sum(report.support for report in result.per_class.values()) == result.n_test
    assert (result.n_train, result.n_test, result.n_features) == (112, 38, 4)
    assert result.artifact == MODEL_ARTIFACT
    assert ctx.produced_artifacts == [MODEL_ARTIFACT]
    path = ctx.model_path()
    model = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    iris = load_iris()
    assert (model.predict(iris.data) == iris.target).mean() >= 0.9


@pytest.mark.parametrize(
    ("model", "hyperparameters"),
    [
        ("logistic_regression", {}),
        ("random_forest", SMALL_FORESTS),
        ("gradient_boosting", {"n_estimators": 20}),
    ],
)
@pytest.mark.parametrize("dataset", ["wine", "breast_cancer"])
def test_each_model_learns_a_bundled_dataset(
    ctx: RecordingContext, model: str, hyperparameters: dict[str, Any], dataset: str
) -> None:
    result = train(ctx, model=model, dataset=dataset, hyperparameters=hyperparameters)

    assert result.model == model
    assert result.accuracy >= 0.85
    assert 0 < result.f1_macro <= 1
    assert result.timings.total_s >= result.timings.fit_s > 0
    assert ctx.model_path().is_file()


def test_synthetic_with_cross_validation_scores_every_fold(ctx: RecordingContext) -> None:
    result = train(
        ctx,
        model="random_forest",
        dataset="synthetic",
        n_samples=300,
        n_features=8,
        n_classes=3,
        cv_folds=3,
        hyperparameters=SMALL_FORESTS,
    )

    assert len(result.cv_scores) == 3
    assert all(0 <= score <= 1 for score in result.cv_scores)
    assert result.classes == ["0", "1", "2"]
    assert result.n_train + result.n_test == 300
    assert result.timings.cv_s > 0


@pytest.mark.parametrize("model", ["logistic_regression", "random_forest", "gradient_boosting"])
def test_progress_only_rises_and_finishes(ctx: RecordingContext, model: str) -> None:
    train(
        ctx,
        model=model,
        dataset="wine",
        cv_folds=2,
        hyperparameters=({} if model == "logistic_regression" else {"n_estimators": 20}),
    )

    assert ctx.reports == sorted(ctx.reports)
    assert ctx.reports[-1] >= 0.9
    assert len(ctx.reports) >= 5


@pytest.mark.parametrize("model", ["random_forest", "gradient_boosting"])
def test_cancel_during_training_stops_the_fit(tmp_path: Path, model: str) -> None:
    ctx = RecordingContext(tmp_path, cancel_after=1)

    with pytest.raises(JobCancelled):
        train(ctx, model=model, dataset="breast_cancer", hyperparameters={"n_estimators": 2000})

    # Stopped at the first report inside the fit (after loading), long before 2000 estimators.
    assert len(ctx.reports) == 2
    assert ctx.reports[-1] < 0.9
    assert not ctx.model_path().exists()


@pytest.mark.parametrize("name", ["iris.csv", "iris.parquet"])
def test_file_dataset_from_the_store(ctx: RecordingContext, tmp_path: Path, name: str) -> None:
    source = write_iris(tmp_path, name)

    result = train(
        ctx, model="logistic_regression", dataset="file", source=source, target_column="species"
    )

    assert result.classes == ["setosa", "versicolor", "virginica"]
    assert result.n_features == 4
    assert result.accuracy >= 0.9


def test_missing_target_column_names_it_and_the_columns_there(
    ctx: RecordingContext, tmp_path: Path
) -> None:
    source = write_iris(tmp_path, "iris.csv")

    with pytest.raises(JobFailed, match="'label'") as failure:
        train(
            ctx, model="logistic_regression", dataset="file", source=source, target_column="label"
        )

    assert "species" in str(failure.value)


def test_text_feature_columns_are_named(ctx: RecordingContext, tmp_path: Path) -> None:
    (tmp_path / "uploads").mkdir()
    pl.DataFrame(
        {
            "colour": ["red", "blue"] * 10,
            "size": np.arange(20.0),
            "target": [0, 1] * 10,
        }
    ).write_csv(tmp_path / "uploads" / "mixed.csv")

    with pytest.raises(JobFailed, match="colour"):
        train(ctx, model="random_forest", dataset="file", source="uploads/mixed.csv")


@pytest.mark.parametrize(
    ("source", "message"),
    [("uploads/iris.json", "must be a .csv or .parquet"), ("uploads/absent.csv", "not in the")],
)
def test_unreadable_sources_are_refused(ctx: RecordingContext, source: str, message: str) -> None:
    with pytest.raises(JobFailed, match=message):
        train(ctx, model="logistic_regression", dataset="file", source=source)


def test_a_symlink_out_of_the_store_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_iris(tmp_path, "iris.csv")
    (store / "uploads").mkdir(parents=True)
    (store / "uploads" / "escape.csv").symlink_to(tmp_path / "uploads" / "iris.csv")
    ctx = RecordingContext(store)

    with pytest.raises(JobFailed, match="outside the artifact store"):
        train(ctx, model="logistic_regression", dataset="file", source="uploads/escape.csv")


def test_synthetic_above_the_sample_cap_is_refused(tmp_path: Path) -> None:
    ctx = RecordingContext(tmp_path, ml_max_samples=500)

    with pytest.raises(JobFailed, match="n_samples=1000"):
        train(ctx, model="logistic_regression", dataset="synthetic", n_samples=1000)


def test_sets_larger_than_the_memory_budget_fail_before_training(tmp_path: Path) -> None:
    # The smallest budget, 1 MiB: iris (150 x 4 x 8 x 3 = 14 KB) fits, 10,000 x 20 does not.
    ctx = RecordingContext(tmp_path, ml_memory_budget_bytes=1024**2)
    with pytest.raises(JobFailed, match="10000 samples x 20 features need about 4 MiB"):
        train(ctx, model="logistic_regression", dataset="synthetic", n_samples=10_000)
    wide = pl.DataFrame({f"f{i}": np.arange(2_000, dtype=np.float64) for i in range(30)})
    (tmp_path / "uploads").mkdir(exist_ok=True)
    wide.with_columns(label=pl.Series([i % 2 for i in range(2_000)])).write_parquet(
        tmp_path / "uploads" / "wide.parquet"
    )
    with pytest.raises(JobFailed, match=r"'uploads/wide\.parquet': 2000 samples x 30 features"):
        train(
            ctx,
            model="logistic_regression",
            dataset="file",
            source="uploads/wide.parquet",
            target_column="label",
        )
    assert train(ctx, model="logistic_regression", dataset="iris").n_features == 4


@pytest.mark.parametrize(
    ("labels", "predicted"),
    [
        (["a", "b", "c", "a", "b", "c"], ["a", "b", "c", "a", "b", "c"]),
        (["a", "b", "c", "a", "b", "c"], ["a", "a", "a", "b", "b", "b"]),  # "c" never predicted
        ([0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 2, 0, 0, 1]),
    ],
)
def test_evaluation_matches_scikit_learns_report(labels: list[Any], predicted: list[Any]) -> None:
    """One metrics pass gives what classification_report, accuracy_score and f1_score say."""
    from conveyor_worker_ml.datasets import LoadedDataset
    from conveyor_worker_ml.job import TrainTestSplit, evaluate
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    y_test, y_predicted = np.array(labels), np.array(predicted)
    classes = np.unique(y_test)
    names = [f"class {label}" for label in classes]
    data = LoadedDataset(np.zeros((len(labels), 1)), y_test, classes, names)
    split = TrainTestSplit(np.zeros((0, 1)), np.zeros((len(labels), 1)), y_test[:0], y_test)

    class Fixed:
        def predict(self, _: Any) -> Any:
            return y_predicted

    evaluation = evaluate(Fixed(), split, data)

    report = classification_report(
        y_test, y_predicted, labels=classes, target_names=names, output_dict=True, zero_division=0
    )
    assert evaluation.accuracy == pytest.approx(accuracy_score(y_test, y_predicted))
    macro = f1_score(y_test, y_predicted, labels=classes, average="macro", zero_division=0)
    assert evaluation.f1_macro == pytest.approx(macro)
    for name in names:
        got = evaluation.per_class[name]
        assert (got.precision, got.recall, got.f1, got.support) == pytest.approx(
            (
                report[name]["precision"],
                report[name]["recall"],
                report[name]["f1-score"],
                report[name]["support"],
            )
        )


def test_bundled_data_is_parsed_once_and_no_job_can_change_it(ctx: RecordingContext) -> None:
    first = load_bundled("iris")
    assert load_bundled("iris") is first
    with pytest.raises(ValueError, match="read-only"):
        first.features[0, 0] = 0.0
    train(ctx, model="logistic_regression", dataset="iris")  # on its own copy of it
    assert np.array_equal(first.features, load_iris().data)


@pytest.mark.parametrize(
    ("environment", "threads"),
    [
        ({}, 1),  # a plain worker: one thread per pool process, not one per core
        ({"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}, 2),  # as the chart sets them
    ],
)
def test_pool_processes_inherit_one_blas_and_openmp_thread_unless_told(
    environment: dict[str, str], threads: int
) -> None:
    # In a child interpreter (the limit is process-wide and would leak into other tests),
    # set as the worker's main process does, then read in a process forked from it.
    script = (
        "import os\n"
        "from conveyor_worker_ml.pool import limit_threads\n"
        "from threadpoolctl import threadpool_info\n"
        "limit_threads()\n"
        "if os.fork() == 0:\n"
        "    print(sorted({(p['user_api'], p['num_threads']) for p in threadpool_info()}))\n"
        "    os._exit(0)\n"
        "os.wait()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in pool.THREAD_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, **environment},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pools = ast.literal_eval(out)
    assert {api for api, _ in pools} >= {"blas", "openmp"}  # numpy's BLAS, sklearn's OpenMP
    assert {count for _, count in pools} == {threads}


def test_warm_up_trains_each_model_and_leaves_nothing_behind(tmp_path: Path) -> None:
    trained = []
    real_build = pool.build_estimator

    def recording_build(params: Any) -> Any:
        trained.append(params.model)
        return real_build(params)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pool, "build_estimator", recording_build)
        patch.chdir(tmp_path)
        pool.warm_up()
    union = typing.get_args(TrainParams)[0]  # Annotated[A | B | C, discriminator]
    models = [
        typing.get_args(m.model_fields["model"].annotation)[0] for m in typing.get_args(union)
    ]
    assert sorted(trained) == sorted(models)
    assert list(tmp_path.iterdir()) == []
