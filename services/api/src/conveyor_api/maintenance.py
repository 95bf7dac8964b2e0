"""Background repairs the gateway runs: jobs that would otherwise wait or run forever.

- A `queued` job whose message RabbitMQ never confirmed (the gateway died between
  committing the row and the confirm, or before it recorded the confirm) is published
  again. Confirms this gateway holds but has not written yet (`dispatched_at` is written
  in the background) are written first, so their jobs are not published twice.
- A `running` job whose heartbeat stopped long ago (its worker is gone and the job store
  could not be told) is failed with the reason, unless its message was already acked
  (handed over, see conveyor_core.worker.handover): then nothing in RabbitMQ will bring it
  back, so it is queued again while it has attempts left.
- Events of jobs that finished more than CONVEYOR_EVENTS_RETENTION_S ago are deleted,
  and the jobs themselves (row, events, artifacts) after CONVEYOR_JOB_RETENTION_S.
Each state change also stores the job's event, so its live stream (GET
/v1/jobs/{id}/events) follows. All are idempotent and guarded by the state they expect,
so several gateway replicas may run them at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from conveyor_core.artifact_paths import is_partial_upload, job_artifact_folder
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs import JOB_TYPES
from conveyor_core.settings import Settings
from conveyor_core.store import gateway_ops, utcnow

from conveyor_api.batching import BackgroundMarks
from conveyor_api.publisher import BrokerUnavailable, JobPublisher
from conveyor_api.unit_of_work import WorkRunner

log = logging.getLogger("conveyor.api.maintenance")
BATCH = 500
PARTIAL_UPLOAD_MAX_AGE_S = 3600  # longer than any upload takes
EVENTS_BATCH = 5000  # events deleted per round, so one round never holds a long lock


class Maintenance:
    def __init__(
        self,
        runner: WorkRunner,
        publisher: JobPublisher,
        dispatched: BackgroundMarks[uuid.UUID],
        artifacts: ArtifactStore,
        settings: Settings,
    ) -> None:
        self.runner = runner
        self.publisher = publisher
        self.dispatched = dispatched
        self.artifacts = artifacts
        self.settings = settings

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.maintenance_interval_s)
            try:
                await self.requeue_stale_handed_over()
                await self.republish_undispatched()
                await self.fail_stale_running()
                await self.prune_events()
                await self.prune_jobs()
                await self.prune_uploads()
            except Exception:  # the store or broker may be down: try again next round
                log.warning("maintenance round failed", exc_info=True)

    async def republish_undispatched(self) -> int:
        await self.dispatched.flush()
        cutoff = utcnow() - timedelta(seconds=self.settings.undispatched_after_s)
        undispatched = await self.runner.read(gateway_ops.undispatched(cutoff, BATCH))
        recorded_meanwhile = self.dispatched.pending  # confirmed since the flush above
        republished = await self._publish(
            [(job.id, job.type) for job in undispatched if job.id not in recorded_meanwhile]
        )
        if republished:
            log.warning("published %d job(s) whose message was never confirmed", republished)
        return republished

    async def _publish(self, rows: Sequence[tuple[uuid.UUID, str]]) -> int:
        """Publish each job's message and mark it dispatched; stop if the broker is down."""
        published = 0
        for job_id, type_name in rows:
            try:
                await self.publisher.publish(JOB_TYPES[type_name], job_id)
            except BrokerUnavailable:
                log.warning("broker unavailable; undispatched jobs wait for the next round")
                break
            self.dispatched.add(job_id)  # written in the background, like a submission's
            published += 1
        return published

    async def requeue_stale_handed_over(self) -> int:
        """Queue again, and publish, a lost job whose message was acked at its hand-over.

        Published at once rather than by republish_undispatched, which waits for rows as old
        as a submission that is still in flight could be.
        """
        now = utcnow()
        requeued = await self.runner.write(
            gateway_ops.requeue_silent(self._silent_since(now), self.settings.max_attempts, now)
        )
        rows = [(job.id, job.type) for job in requeued]
        if rows:
            log.warning("queued again %d handed-over job(s) whose worker was lost", len(rows))
        # A job left unpublished here (broker down) is sent by republish_undispatched.
        return await self._publish(rows)

    def _silent_since(self, now: datetime) -> datetime:
        """A running job whose heartbeat stopped before this is silent: lost or cut off."""
        return now - timedelta(seconds=self.settings.stale_job_after_s)

    async def fail_stale_running(self) -> int:
        now = utcnow()
        error = (
            f"no heartbeat for {self.settings.stale_job_after_s:g} s: its worker "
            "stopped reporting (lost, or cut off from the job store)"
        )
        # Not one requeue_stale_handed_over takes: its heartbeat may have passed the cutoff
        # only since that step ran, earlier this round.
        failed = await self.runner.write(
            gateway_ops.fail_silent(self._silent_since(now), self.settings.max_attempts, now, error)
        )
        if failed:
            log.warning("failed %d running job(s) without a heartbeat", failed)
        return failed

    async def prune_events(self) -> int:
        """Delete one batch of the events of jobs finished before the retention period."""
        cutoff = utcnow() - timedelta(seconds=self.settings.events_retention_s)
        pruned = await self.runner.write(gateway_ops.prune_events(cutoff, EVENTS_BATCH))
        if pruned:
            log.info("deleted %d event(s) of jobs finished long ago", pruned)
        return pruned

    async def prune_jobs(self) -> int:
        """Delete one batch of jobs finished before the retention period, artifacts first.

        Files go before the row: a row deleted first would leave its files with nothing
        pointing at them. A job whose files cannot be deleted now keeps its row until a
        later round manages it. The row's events go with it (ON DELETE CASCADE).
        """
        if not self.settings.job_retention_s:
            return 0
        cutoff = utcnow() - timedelta(seconds=self.settings.job_retention_s)
        expired = await self.runner.read(gateway_ops.finished_before(cutoff, BATCH))
        deletable = []
        for job in expired:
            job_id = job.id
            if job.artifacts:
                try:
                    await asyncio.to_thread(
                        self.artifacts.remove_folder, job_artifact_folder(job_id)
                    )
                except OSError:
                    log.warning(
                        "job %s: artifacts not deleted; retried later", job_id, exc_info=True
                    )
                    continue
            deletable.append(job_id)
        if not deletable:
            return 0
        pruned = await self.runner.write(gateway_ops.delete_finished(deletable, cutoff))
        log.info(
            "deleted %d job(s) finished more than %.0f s ago", pruned, self.settings.job_retention_s
        )
        return pruned

    async def prune_uploads(self) -> int:
        """Delete uploads not written for the upload retention period, and partial uploads
        (a gateway that died mid-upload) once they are an hour old."""
        now = utcnow()
        retention_s = self.settings.upload_retention_s
        cutoff = now - timedelta(seconds=retention_s) if retention_s else None
        partial_cutoff = now - timedelta(seconds=PARTIAL_UPLOAD_MAX_AGE_S)
        expired = [
            stored.path
            for stored in await asyncio.to_thread(self.artifacts.files, "uploads")
            if (cutoff is not None and stored.modified < cutoff)
            or (is_partial_upload(stored.path) and stored.modified < partial_cutoff)
        ]
        pruned = 0
        for path in expired:
            try:
                await asyncio.to_thread(self.artifacts.remove, path)
                pruned += 1
            except OSError:
                log.warning("upload %s: not deleted; retried later", path, exc_info=True)
        if pruned:
            log.info("deleted %d upload(s) not written for %.0f s", pruned, retention_s)
        return pruned
