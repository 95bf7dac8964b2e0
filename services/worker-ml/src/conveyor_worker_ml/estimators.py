"""Build the requested classifier and fit it in small steps that report progress.

Fitting in steps is what makes a long training cancellable: between steps the job's
progress is reported, and reporting raises JobCancelled once a cancel was requested.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from conveyor_core.jobs.ml import (
    GradientBoostingTrain,
    LogisticRegressionTrain,
    RandomForestTrain,
    TrainParams,
)
from conveyor_core.worker import JobCancelled
from numpy.typing import NDArray
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conveyor_worker_ml.progress import ProgressSpan

TREES_PER_STEP = 10


def build_estimator(params: TrainParams) -> Any:
    """An unfitted estimator with the caller's hyperparameters."""
    match params:
        case LogisticRegressionTrain(hyperparameters=hp):
            # Scaling lets lbfgs converge on unscaled sets such as digits or breast_cancer.
            return make_pipeline(
                StandardScaler(),
                LogisticRegression(
                    C=hp.C,
                    max_iter=hp.max_iter,
                    class_weight=hp.class_weight,
                    random_state=params.random_state,
                ),
            )
        case RandomForestTrain(hyperparameters=hp):
            return RandomForestClassifier(
                n_estimators=hp.n_estimators,
                max_depth=hp.max_depth,
                min_samples_leaf=hp.min_samples_leaf,
                max_features=hp.max_features,
                class_weight=hp.class_weight,
                random_state=params.random_state,
            )
        case GradientBoostingTrain(hyperparameters=hp):
            return GradientBoostingClassifier(
                n_estimators=hp.n_estimators,
                learning_rate=hp.learning_rate,
                max_depth=hp.max_depth,
                subsample=hp.subsample,
                random_state=params.random_state,
            )


def fit_with_progress(
    estimator: Any, features: NDArray[np.float64], target: NDArray[Any], span: ProgressSpan
) -> None:
    """Fit `estimator` in place, filling `span`; raises JobCancelled if a cancel arrives."""
    if isinstance(estimator, RandomForestClassifier):
        _grow_forest(estimator, features, target, span)
    elif isinstance(estimator, GradientBoostingClassifier):
        _boost(estimator, features, target, span)
    else:
        span.report(0.0)
        estimator.fit(features, target)
        span.report(1.0)


def _grow_forest(
    forest: RandomForestClassifier,
    features: NDArray[np.float64],
    target: NDArray[Any],
    span: ProgressSpan,
) -> None:
    total = forest.n_estimators
    forest.set_params(warm_start=True)
    with warnings.catch_warnings():
        # Every step sees the full training set, so "balanced" weights stay correct.
        warnings.filterwarnings("ignore", message="class_weight presets", category=UserWarning)
        for grown in range(TREES_PER_STEP, total + TREES_PER_STEP, TREES_PER_STEP):
            forest.set_params(n_estimators=min(grown, total))
            forest.fit(features, target)
            span.report(forest.n_estimators / total)
    # A later fit of the stored model should start afresh, not add trees.
    forest.set_params(warm_start=False)


def _boost(
    booster: GradientBoostingClassifier,
    features: NDArray[np.float64],
    target: NDArray[Any],
    span: ProgressSpan,
) -> None:
    total = booster.n_estimators

    def monitor(stage: int, _booster: Any, _locals: Any) -> bool:
        # Returning True ends fit cleanly; the cancel is raised below, outside scikit-learn.
        try:
            span.report((stage + 1) / total)
        except JobCancelled:
            return True
        return False

    booster.fit(features, target, monitor=monitor)
    span.ctx.check_cancelled()
