"""The shared task wrapper: every state change a job goes through, written in one place.

A job implementation is a plain function `(params, ctx) -> result model`. This module
claims the job, keeps its heartbeat, watches for a cancel, records the outcome and
bounds redeliveries, so an implementation holds only the work itself.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery, Task, signals
from celery.exceptions import Reject, SecurityWarning
from celery.worker import state as worker_state
from celery.worker.request import Request
from prometheus_client.multiprocess import mark_process_dead
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from conveyor_core.artifact_paths import attempt_artifact_folder, job_artifact_reference
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.celery_app import create_celery_app, declare_topology
from conveyor_core.jobs.base import ROW_WAIT_S, JobType
from conveyor_core.logs import configure_logging
from conveyor_core.metrics import enable_multiprocess
from conveyor_core.settings import Settings, get_settings
from conveyor_core.states import JobState
from conveyor_core.store import utcnow
from conveyor_core.store.engine import make_sync_engine
from conveyor_core.store.worker_ops import Claim, WorkerJobStore, run_holder
from conveyor_core.worker import metrics
from conveyor_core.worker.context import JobCancelled, JobContext, JobFailed
from conveyor_core.worker.handover import Handover, handover_step
from conveyor_core.worker.idle import IdleExit, idle_exit_step
from conveyor_core.worker.probe import start_probe_server
from conveyor_core.worker.warm_pool import WarmPool

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")
# Polls for a row still being committed: a few ms is the usual wait (a commit's fsync).
FIRST_ROW_POLL_S = 0.002
LAST_ROW_POLL_S = 0.5

Implementation = Callable[[Any, JobContext], BaseModel]


class _PerProcess:
    """Engine and store made lazily in each process: connections must not cross a fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = 0
        self._engine: Engine | None = None
        self._store: WorkerJobStore | None = None
        self._artifacts: ArtifactStore | None = None
        self._heartbeat: _Heartbeat | None = None
        # The warm-up thread and the first job may both get here first. A fresh lock in
        # each forked child: a copy held by a parent's thread would never be released.
        self._making = threading.Lock()
        os.register_at_fork(after_in_child=self._new_lock)

    def _new_lock(self) -> None:
        self._making = threading.Lock()

    def _ensure(self) -> None:
        if self._pid == os.getpid():
            return
        with self._making:
            self._make_for_this_process()

    def _make_for_this_process(self) -> None:
        if self._pid != os.getpid():
            if self._engine is not None:
                # Inherited across a fork: drop the parent's pool without closing its
                # connections, which the parent still uses.
                self._engine.dispose(close=False)
            self._engine = make_sync_engine(self.settings.database_url.get_secret_value())
            self._store = WorkerJobStore(self._engine)
            self._artifacts = ArtifactStore(self.settings.artifact_root)
            self._heartbeat = None  # a parent's thread does not exist in a forked child
            self._pid = os.getpid()

    @property
    def store(self) -> WorkerJobStore:
        self._ensure()
        assert self._store is not None
        return self._store

    @property
    def heartbeat(self) -> _Heartbeat:
        self._ensure()
        with self._making:
            if self._heartbeat is None:
                assert self._store is not None
                self._heartbeat = _Heartbeat(self._store, self.settings)
                self._heartbeat.start()
            return self._heartbeat

    @property
    def artifacts(self) -> ArtifactStore:
        self._ensure()
        assert self._artifacts is not None
        return self._artifacts


class _Heartbeat(threading.Thread):
    """Syncs progress and liveness, and turns a cancel request into a stopped job.

    One per pool process, following the job the process runs (`watch`, `unwatch`): a
    thread started and joined per job cost more than a tiny job's own work.
    """

    def __init__(self, store: WorkerJobStore, settings: Settings) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.store = store
        self.interval = settings.heartbeat_interval_s
        self.grace = settings.cancel_grace_s
        # The gateway takes a job whose heartbeat was silent stale_job_after_s: a run stops
        # itself after half of that without a renewal, so two copies never overlap.
        self.lease_s = settings.stale_job_after_s / 2
        self._changed = threading.Condition()
        self._job: JobContext | None = None
        self._beating = threading.Lock()  # held while a beat of the watched job runs

    def watch(self, ctx: JobContext) -> None:
        with self._changed:
            self._job = ctx
            self._changed.notify()

    def unwatch(self) -> None:
        """Stop following the job; once this returns, no beat for it runs or will run."""
        with self._beating, self._changed:
            self._job = None
            self._changed.notify()

    def run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._job is not None)
                ctx = self._job
            assert ctx is not None
            self._follow(ctx)

    def _follow(self, ctx: JobContext) -> None:
        cancel_deadline: float | None = None
        synced_progress = 0.0
        renewed = time.monotonic()  # the claim was the first renewal
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._job is not ctx, timeout=self.interval)
            with self._beating:
                if self._job is not ctx:
                    return
                progress = ctx.progress
                try:
                    beat = self.store.beat(
                        ctx.job_id,
                        progress,
                        ctx.attempt,
                        progress_changed=progress != synced_progress,
                    )
                except Exception:  # the store may be restarting; the next beat retries
                    log.warning("heartbeat for job %s failed", ctx.job_id, exc_info=True)
                    if cancel_deadline is None and time.monotonic() - renewed > self.lease_s:
                        log.error(
                            "job %s: heartbeat lease of %.0f s expired (job store unreachable); "
                            "stopping it before another worker may take it over",
                            ctx.job_id,
                            self.lease_s,
                        )
                        ctx.lose_lease()
                        cancel_deadline = time.monotonic() + self.grace
                    if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                        self._kill_unresponsive_job(ctx)
                    continue
                renewed = time.monotonic()
                synced_progress = progress
                if beat.cancel_requested and cancel_deadline is None:
                    log.info("job %s: cancel requested, stopping it", ctx.job_id)
                    cancel_deadline = time.monotonic() + self.grace
                    ctx.request_cancel()
                if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                    self._kill_unresponsive_job(ctx)

    def _kill_unresponsive_job(self, ctx: JobContext) -> None:
        # The job ignored the cancel (stuck in native code, say). Record the outcome, then
        # end this pool process; the redelivered message finds the job cancelled and is acked.
        log.warning("job %s did not stop within %ss; killing its process", ctx.job_id, self.grace)
        if ctx.lease_lost:  # the outcome is not this run's to record
            os.kill(os.getpid(), signal.SIGKILL)
        self.store.finish(
            ctx.job_id,
            JobState.CANCELLED,
            error="cancelled by request",
            artifacts=ctx.produced_artifacts,
            attempt=ctx.attempt,
        )
        os.kill(os.getpid(), signal.SIGKILL)


class LeaseLost(Exception):
    """The run stopped because it could not renew its heartbeat lease."""


class OverRunningLimit(Exception):
    """The job's key has CONVEYOR_MAX_RUNNING_PER_KEY jobs of its type running: not claimed."""

    def __init__(self, pause_s: float) -> None:
        super().__init__("its key is at CONVEYOR_MAX_RUNNING_PER_KEY")
        self.pause_s = pause_s


class StoreUnavailable(Exception):
    """The job store did not answer within CONVEYOR_STORE_RETRY_S: the job was not claimed."""


def _retrying(operation: Callable[[], T], budget_s: float) -> T:
    """Run a job store operation, retrying connection errors for up to `budget_s` seconds."""
    deadline = time.monotonic() + budget_s
    delay = 0.25
    while True:
        try:
            return operation()
        except (OperationalError, InterfaceError):
            if time.monotonic() + delay > deadline:
                raise
            log.warning("job store unavailable; retrying in %.2fs", delay, exc_info=True)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class JobRunner:
    def __init__(
        self, job_type: JobType, implementation: Implementation, settings: Settings
    ) -> None:
        self.job_type = job_type
        self.implementation = implementation
        self.settings = settings
        self.resources = _PerProcess(settings)
        self.jobs_run = 0  # in this pool process

    @property
    def soft_time_limit_s(self) -> int:
        return self.settings.soft_time_limit_s or self.job_type.soft_time_limit_s

    @property
    def time_limit_s(self) -> int:
        return self.settings.time_limit_s or self.job_type.time_limit_s

    def execute(self, job_id: uuid.UUID, worker: str, redelivered: bool = False) -> None:
        store = self.resources.store
        try:
            claim, state = self._claim_when_written(store, job_id, worker, redelivered)
        except SQLAlchemyError as error:
            raise StoreUnavailable(str(error)) from error
        if claim is None:
            if state == JobState.QUEUED and self.settings.max_running_per_key:
                metrics.JOBS_DEFERRED.labels(self.job_type.name).inc()
                raise OverRunningLimit(self._defer_pause_s(store, job_id))
            log.info("job %s is %s; nothing to run", job_id, state or "unknown")
            return
        name = self.job_type.name
        if claim.attempts > self.settings.max_attempts:
            metrics.JOBS_FAILED.labels(name).inc()
            store.finish(
                job_id,
                JobState.FAILED,
                error=(
                    f"gave up after {claim.attempts - 1} attempts: the worker running this job "
                    "was lost every time (crash, out of memory or kill)"
                ),
            )
            # Rejected without requeue, RabbitMQ moves the message to the dead-letter queue.
            raise Reject("attempts exhausted", requeue=False)
        if claim.cancel_requested:
            store.finish(job_id, JobState.CANCELLED, error="cancelled by request")
            return
        if claim.type != self.job_type.name:
            metrics.JOBS_FAILED.labels(name).inc()
            store.finish(
                job_id,
                JobState.FAILED,
                error=f"job of type {claim.type!r} reached the {self.job_type.name} worker",
            )
            return
        try:
            params = self.job_type.parse_params(claim.params)
            params = _with_inputs_resolved(self.job_type, params, store)
        except ValidationError as error:
            metrics.JOBS_FAILED.labels(name).inc()
            store.finish(job_id, JobState.FAILED, error=f"invalid params: {error}")
            return
        except JobFailed as error:
            metrics.JOBS_FAILED.labels(name).inc()
            store.finish(job_id, JobState.FAILED, error=str(error))
            return
        metrics.JOBS_STARTED.labels(name).inc()
        if claim.attempts == 1:
            waited = (utcnow() - claim.created_at).total_seconds()
            metrics.JOB_QUEUE_WAIT_SECONDS.labels(name).observe(max(waited, 0.0))
        else:
            metrics.JOBS_RETRIED.labels(name).inc()
        self._run(job_id, params, store, claim.attempts)

    def _defer_pause_s(self, store: WorkerJobStore, job_id: uuid.UUID) -> float:
        """How long to hold a job over its key's running limit before it goes back: not at
        all while another key's job waits (skip to it), else a beat, so that a queue of one
        key's jobs is not spun through at broker speed while its running ones finish."""
        return 0.0 if store.other_keys_waiting(job_id) else self.settings.heartbeat_interval_s

    @property
    def takeover_after_s(self) -> float:
        """How long a running job's heartbeat must be silent before a redelivery takes it."""
        return 3 * self.settings.heartbeat_interval_s

    @property
    def takeover_wait_s(self) -> float:
        """How long a redelivery waits for the previous run's heartbeat to go silent."""
        # Celery's check finds a dead connection after two missed heartbeats, and runs
        # every half heartbeat (seen here: 3.5 heartbeats); four is the bound.
        noticed_s = 4 * self.settings.broker_heartbeat_s
        return max(noticed_s, self.takeover_after_s) + 2 * self.settings.heartbeat_interval_s

    def _claim(
        self, store: WorkerJobStore, job_id: uuid.UUID, worker: str, redelivered: bool
    ) -> Claim | None:
        limit = self.settings.max_running_per_key
        if not redelivered:
            return _retrying(
                lambda: store.claim(job_id, worker, max_running_per_key=limit),
                self.settings.store_retry_s,
            )
        # The message's previous holder was lost, but its job may still look alive: for a few
        # heartbeats, or for as long as that worker takes to notice it lost RabbitMQ (a
        # one-sided disconnect: the broker redelivered at once, the worker learns from its
        # AMQP heartbeats, then stops the job). Or really be alive, run by another
        # delivery. Wait until we know, so that a lost run is taken over, not left to the
        # reaper to fail.
        interval = self.settings.heartbeat_interval_s
        deadline = time.monotonic() + self.takeover_wait_s
        while True:
            claim = _retrying(
                lambda: store.claim(job_id, worker, self.takeover_after_s, limit),
                self.settings.store_retry_s,
            )
            if claim is not None or time.monotonic() > deadline:
                return claim
            if store.current_state(job_id) != JobState.RUNNING:
                return None
            time.sleep(interval)

    def _claim_when_written(
        self, store: WorkerJobStore, job_id: uuid.UUID, worker: str, redelivered: bool
    ) -> tuple[Claim | None, str | None]:
        """The claim, or why there is none: the job's state, or None for a row that never came.

        The gateway publishes while the row commits (ROW_WAIT_S), so the message can come
        first: a missing row is polled for. A row first seen `queued` after a missed claim
        was committed in between: it is claimed once more before the state is the answer.
        """
        deadline = time.monotonic() + ROW_WAIT_S
        pause = FIRST_ROW_POLL_S
        seen_queued = False
        while True:
            claim = self._claim(store, job_id, worker, redelivered)
            if claim is not None:
                return claim, None
            state = store.current_state(job_id)
            if state is not None:
                if seen_queued or state != JobState.QUEUED:
                    return None, state
                seen_queued = True
                continue
            if time.monotonic() >= deadline:
                log.warning("job %s: no row after %.0f s; message dropped", job_id, ROW_WAIT_S)
                return None, None
            time.sleep(pause)
            pause = min(2 * pause, LAST_ROW_POLL_S)

    def _run(self, job_id: uuid.UUID, params: Any, store: WorkerJobStore, attempt: int) -> None:
        ctx = JobContext(
            job_id, self.settings, self.resources.artifacts, attempt, store.append_output
        )
        heartbeat = self.resources.heartbeat
        heartbeat.watch(ctx)
        log.info("job %s (%s) started", job_id, self.job_type.name)
        state, result, error = JobState.FAILED, None, None
        started = time.monotonic()
        in_progress = metrics.JOBS_IN_PROGRESS.labels(self.job_type.name)
        in_progress.inc()
        try:
            output = self.job_type.result.model_validate(self.implementation(params, ctx))
            result = output.model_dump(mode="json")
            error = self.job_type.failure_of(params, output)
            state = JobState.SUCCEEDED if error is None else JobState.FAILED
        except JobCancelled:
            state, error = JobState.CANCELLED, "cancelled by request"
        except SoftTimeLimitExceeded:
            error = f"time limit of {self.soft_time_limit_s} s exceeded"
        except JobFailed as failure:
            error = str(failure)
        except Exception as failure:
            log.exception("job %s raised", job_id)
            error = f"{type(failure).__name__}: {failure}"
        finally:
            heartbeat.unwatch()
            in_progress.dec()
            if not ctx.lease_lost:
                ctx.flush_output()  # the last lines are stored before the final state
        if ctx.lease_lost:
            self._discard_attempt(job_id, attempt)
            raise LeaseLost(f"job {job_id}: stopped, its heartbeat lease expired")
        self._count_outcome(state, time.monotonic() - started)
        recorded = _retrying(
            lambda: store.finish(
                job_id,
                state,
                result=result,
                error=error,
                artifacts=ctx.produced_artifacts,
                progress=1.0 if state is JobState.SUCCEEDED else None,
                attempt=attempt,
            ),
            self.settings.store_retry_s,
        )
        if not recorded:
            # Another run took the job over (this one was paused or cut off past its lease):
            # its outcome stands, and this run's files are never published.
            log.warning("job %s: attempt %d was superseded; its outcome dropped", job_id, attempt)
            self._discard_attempt(job_id, attempt)
            return
        for earlier in range(1, attempt):
            self._discard_attempt(job_id, earlier)
        log.info("job %s %s%s", job_id, state.value, f": {error}" if error else "")

    def _discard_attempt(self, job_id: uuid.UUID, attempt: int) -> None:
        """Delete the files of a run whose outcome is not the job's (best effort: the
        retention sweep deletes the whole job folder in the end)."""
        try:
            self.resources.artifacts.remove_folder(attempt_artifact_folder(job_id, attempt))
        except Exception:
            log.warning("job %s: files of attempt %d not deleted", job_id, attempt, exc_info=True)

    def _count_outcome(self, state: JobState, run_seconds: float) -> None:
        name = self.job_type.name
        metrics.JOB_RUN_SECONDS.labels(name).observe(run_seconds)
        if state is JobState.SUCCEEDED:
            metrics.JOBS_SUCCEEDED.labels(name).inc()
            metrics.LAST_SUCCESS.labels(name).set_to_current_time()
        elif state is JobState.CANCELLED:
            metrics.JOBS_CANCELLED.labels(name).inc()
        else:
            metrics.JOBS_FAILED.labels(name).inc()

    def start_warm_up(
        self, implementation_warm_up: Callable[[], None] | None, then: Callable[[], None]
    ) -> None:
        """Warm a new pool process up in a thread, so that its start is not held up:
        Celery gives a pool process 4 s to report that it is up, and a job store that does
        not answer could take longer than that. `then` runs once it is over, however."""

        def warm_up() -> None:
            try:
                self._warm_up(implementation_warm_up)
            finally:
                then()

        threading.Thread(target=warm_up, name="warm-up", daemon=True).start()

    def _warm_up(self, implementation_warm_up: Callable[[], None] | None) -> None:
        """Do what the process's first job would otherwise wait for: connect to the job
        store, compile the claim and finish statements (run against no job, they change
        nothing), start the heartbeat thread, then the implementation's own warm-up. Best
        effort: a store that is down now is retried by the first job as usual."""
        nobody = uuid.UUID(int=0)
        try:
            store = self.resources.store
            store.claim(nobody, "warm-up")
            store.finish(nobody, JobState.SUCCEEDED, result=None, attempt=0)
            self.resources.heartbeat  # noqa: B018 - starts the thread
        except Exception:
            log.warning("pool process warm-up: job store not reachable yet", exc_info=True)
        if implementation_warm_up is not None:
            try:
                implementation_warm_up()
            except Exception:
                log.warning("pool process warm-up of %s failed", self.job_type.name, exc_info=True)

    def count_job_and_stop_when_done(self) -> None:
        """Honour CONVEYOR_WORKER_MAX_JOBS: ask the worker for a warm shutdown once reached."""
        self.jobs_run += 1
        limit = self.settings.worker_max_jobs
        if limit and self.jobs_run >= limit:
            log.info("ran %d job(s), the configured maximum; stopping the worker", self.jobs_run)
            os.kill(os.getppid(), signal.SIGTERM)  # the pool's parent is the worker main process

    def on_hard_time_limit(self, job_id: uuid.UUID, run: str) -> None:
        """Runs in the worker's main process after Celery killed the pool process `run`."""
        failed = self.resources.store.finish(
            job_id,
            JobState.FAILED,
            error=(
                f"hard time limit of {self.time_limit_s} s exceeded; the job's process was killed"
            ),
            run=run,
        )
        if failed:
            metrics.JOBS_FAILED.labels(self.job_type.name).inc()
        else:
            log.info("job %s: killed run %s no longer held the job; nothing recorded", job_id, run)


def build_worker_app(
    job_type: JobType,
    implementation: Implementation,
    settings: Settings | None = None,
    warm_up: Callable[[], None] | None = None,
) -> Celery:
    """The Celery app of one worker service, with its one task registered; `warm_up` runs
    in each pool process as it starts (see `run_worker`)."""
    settings = settings or get_settings()
    app = create_celery_app(settings, [job_type])
    app.conf.worker_consumer = "conveyor_core.worker.consumer:JobConsumer"
    metrics.declare_series(job_type.name)
    runner = JobRunner(job_type, implementation, settings)
    if settings.ack_handover_after_s:
        handover = Handover(
            lambda: runner.resources.store,
            job_type.queue,
            settings.worker_concurrency,
            settings.ack_handover_after_s,
        )
        app.steps["consumer"].add(handover_step(handover))
    if settings.worker_idle_exit_s:
        app.steps["consumer"].add(idle_exit_step(IdleExit(settings.worker_idle_exit_s)))
    warm_pool = WarmPool(settings.worker_concurrency)
    app.steps["worker"].add(warm_pool.step())

    class JobRequest(Request):  # type: ignore[misc]
        def on_timeout(self, soft: bool, timeout: float) -> None:
            super().on_timeout(soft, timeout)
            if not soft and not worker_state.should_terminate:
                # The pool process is killed by now; only its own run of the job is failed.
                job_id = uuid.UUID(self.kwargs["job_id"])
                runner.on_hard_time_limit(job_id, run_holder(self.hostname, self.worker_pid))

    class JobTask(Task):  # type: ignore[misc]
        Request = JobRequest

    @app.task(
        name=job_type.task_name,
        base=JobTask,
        bind=True,
        soft_time_limit=runner.soft_time_limit_s,
        time_limit=runner.time_limit_s,
    )
    def execute(task: Task, job_id: str) -> None:
        handed_back = False
        try:
            delivery = task.request.delivery_info or {}
            runner.execute(
                uuid.UUID(job_id),
                worker=run_holder(task.request.hostname or "unknown", os.getpid()),
                redelivered=bool(delivery.get("redelivered")),
            )
        except StoreUnavailable as error:
            log.warning("job %s: job store unavailable (%s); handing the job back", job_id, error)
            handed_back = True
            _hand_back(task, job_type, job_id, f"job store unavailable: {error}")
        except OverRunningLimit as over:
            log.info("job %s: %s; to the back of the queue", job_id, over)
            handed_back = True
            time.sleep(over.pause_s)
            _hand_back(task, job_type, job_id, str(over))
        except LeaseLost as lost:
            # Its message goes back (a no-op once handed over: the reaper requeues the job
            # then); a redelivery takes the job over once the store answers again.
            raise Reject(str(lost), requeue=True) from lost
        finally:
            if not handed_back:  # CONVEYOR_WORKER_MAX_JOBS counts jobs run, not passed on
                runner.count_job_and_stop_when_done()

    @signals.worker_ready.connect(weak=False)
    def _declare_dead_letter_queue(sender: Any = None, **_: Any) -> None:
        with app.connection_for_write() as connection:
            declare_topology(connection, [job_type])
        metrics.WORKER_UP.labels(job_type.name).set(1)

    @signals.worker_shutting_down.connect(weak=False)
    def _worker_down(**_: Any) -> None:
        metrics.WORKER_UP.labels(job_type.name).set(0)

    @signals.worker_process_init.connect(weak=False)
    def _warm_up_pool_process(**_: Any) -> None:
        runner.start_warm_up(warm_up, then=warm_pool.process_warm)

    @signals.worker_process_shutdown.connect(weak=False)
    def _forget_pool_process(pid: int | None = None, **_: Any) -> None:
        # Live gauges of a pool process that exits must not count any more.
        if settings.metrics_port:
            mark_process_dead(pid or os.getpid())

    return app


def _with_inputs_resolved(job_type: JobType, params: Any, store: WorkerJobStore) -> Any:
    """Point each input naming a job's output (`jobs/<id>/<name>`) at the file of the attempt
    that recorded that job's outcome; any other path is read as it is."""
    resolved = {}
    for name, path in job_type.input_paths(params).items():
        reference = job_artifact_reference(path)
        if reference is None:
            continue
        location = store.artifact_location(*reference)
        if location is None:
            raise JobFailed(
                f"{name} {path!r}: job {reference[0]} has no artifact {reference[1]!r} "
                "(it is unknown, not finished, or produced no such file)"
            )
        resolved[name] = location
    return params.model_copy(update=resolved) if resolved else params


def _hand_back(task: Task, job_type: JobType, job_id: str, reason: str) -> None:
    """Give an unclaimed job's message back, as a new message at the back of its queue.

    Rejected with requeue, a message counts a delivery each time, and a store outage (or a
    key at its running limit) longer than the queue's delivery limit allows would
    dead-letter it: the job would sit `queued` forever. A fresh copy, confirmed by RabbitMQ
    before this one is acked, starts its count anew (a duplicate is dropped by the claim).
    Only if RabbitMQ refuses the copy too is the message rejected.
    """
    try:
        task.app.send_task(
            job_type.task_name,
            kwargs={"job_id": job_id},
            task_id=job_id,
            queue=job_type.queue,
            routing_key=job_type.queue,
        )
    except Exception as publish_error:
        raise Reject(f"{reason}; broker unavailable", requeue=True) from publish_error


def _freeze_before_fork(**_: Any) -> None:
    gc.freeze()


def run_worker(
    job_type: JobType, implementation: Implementation, warm_up: Callable[[], None] | None = None
) -> None:
    """Entry point of a worker service: consume only this job type's queue.

    Import the implementation's heavy libraries before calling this: the worker's main
    process then holds them once for every pool process it forks. `warm_up` runs in each
    pool process as it starts, for what must not happen before a fork (a library's thread
    pool, say), so that no job pays a first-use cost.
    """
    settings = get_settings()
    configure_logging(settings.log_level)
    if os.geteuid() == 0:
        # Celery warns of a root worker three times on every start; say it once, and what
        # holds: the chart and images never run one, and commands never run as root.
        warnings.filterwarnings("ignore", category=SecurityWarning)
        log.warning(
            "running as root (the chart and images run workers as uid 10001); messages "
            "are JSON only, never pickle, and cmd.run commands run as %r",
            settings.cmd_run_as_user,
        )
    if settings.metrics_port:
        enable_multiprocess(Path(tempfile.mkdtemp(prefix=f"conveyor-metrics-{job_type.worker}-")))
        start_probe_server(settings.metrics_host, settings.metrics_port)
    app = build_worker_app(job_type, implementation, settings, warm_up)
    # What is loaded by now is shared with the pool processes forked next: out of the
    # collector's reach, its pages are not copied into each of them by a collection.
    # Again just before the fork, for what Celery's set-up made in between.
    gc.freeze()
    signals.celeryd_after_setup.connect(_freeze_before_fork, weak=False)
    app.worker_main(
        [
            "worker",
            f"--queues={job_type.queue}",
            f"--hostname={job_type.worker}@%h",
            f"--concurrency={settings.worker_concurrency}",
            "--pool=prefork",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
