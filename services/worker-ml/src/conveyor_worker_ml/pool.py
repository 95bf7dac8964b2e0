"""The ML worker's start: its libraries warmed up before the fork, its pool processes' threads."""

from __future__ import annotations

import os

import skops.io
from conveyor_core.jobs import ML_TRAIN
from threadpoolctl import threadpool_limits

from conveyor_worker_ml.datasets import load_bundled
from conveyor_worker_ml.estimators import build_estimator
from conveyor_worker_ml.job import evaluate, split_train_test

# How many threads BLAS and OpenMP start, read by the libraries as they load. The chart
# sets them on every worker from `workers.<name>.threads`.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# One small job per model: enough to reach every library path a real job takes.
WARM_UP_JOBS = [
    {"dataset": "iris", "model": "logistic_regression"},
    {"dataset": "iris", "model": "random_forest", "hyperparameters": {"n_estimators": 2}},
    {"dataset": "iris", "model": "gradient_boosting", "hyperparameters": {"n_estimators": 2}},
]


def limit_threads() -> None:
    """Without THREAD_VARIABLES, hold the pool processes to one BLAS and OpenMP thread each.

    Left alone, the libraries start one thread per core of the machine in every pool
    process, although each process already runs a job of its own; on a small fit those
    threads spin more than they compute (an iris job took 22 ms of CPU instead of 12).
    Called in the worker's main process before the fork, which every pool process
    inherits: BLAS's count is process memory, OpenMP's belongs to the forking thread, the
    pool process's main thread. Set in each pool process instead, it cost its first job
    5 ms more.
    """
    if not any(os.environ.get(name) for name in THREAD_VARIABLES):
        threadpool_limits(limits=1)


def warm_up() -> None:
    """Train each model once on iris, without storing anything, in the worker's main
    process before it forks its pool: scikit-learn's, SciPy's and skops' first calls
    (caches, lazy set-up) happen here once, and every pool process inherits their result.
    Without it, the first job of each pool process was 3-5 times slower than the next
    ones; done in each pool process, the pages it touches were copied into each (13 MB).

    One thread, so that no OpenMP or BLAS thread team is running when the pool forks.
    """
    with threadpool_limits(limits=1):
        data = load_bundled("iris")
        for raw in WARM_UP_JOBS:
            params = ML_TRAIN.parse_params(raw)
            split = split_train_test(data, params.test_size, params.random_state)
            estimator = build_estimator(params)
            estimator.fit(split.x_train, split.y_train)
            evaluate(estimator, split, data)
            skops.io.dumps(estimator)
