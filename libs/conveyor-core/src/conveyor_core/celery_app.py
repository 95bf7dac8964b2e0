"""The Celery app factory and the queue topology every service agrees on."""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from conveyor_core.jobs.base import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE_ARGUMENTS,
    EXCHANGE,
    QUEUE_DELIVERY_LIMIT,
    JobType,
    queue_arguments,
)
from conveyor_core.settings import Settings

job_exchange = Exchange(EXCHANGE, type="direct", durable=True)
dead_letter_exchange = Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)


def job_queue(job_type: JobType) -> Queue:
    return Queue(
        job_type.queue,
        exchange=job_exchange,
        routing_key=job_type.queue,
        durable=True,
        queue_arguments=queue_arguments(QUEUE_DELIVERY_LIMIT),
    )


def dead_letter_queue(job_type: JobType) -> Queue:
    # Dead-lettered messages keep their routing key (the job queue's name).
    return Queue(
        job_type.dead_letter_queue,
        exchange=dead_letter_exchange,
        routing_key=job_type.queue,
        durable=True,
        queue_arguments=DEAD_LETTER_QUEUE_ARGUMENTS,
    )


def declare_topology(connection: Connection, job_types: Iterable[JobType]) -> None:
    """Declare exchanges, job queues and dead-letter queues (idempotent)."""
    channel = connection.default_channel
    for job_type in job_types:
        job_queue(job_type)(channel).declare()
        dead_letter_queue(job_type)(channel).declare()


def create_celery_app(settings: Settings, job_types: Iterable[JobType]) -> Celery:
    """A Celery app wired for long jobs that must not be lost.

    No result backend: the job store holds results, so RabbitMQ never accumulates the
    reply queues `rpc://` leaves behind. No remote control, gossip or mingle either: they
    would declare per-worker queues that nobody cleans up.
    """
    types = list(job_types)
    app = Celery("conveyor", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url.get_secret_value(),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_heartbeat=settings.broker_heartbeat_s,
        broker_transport_options={"confirm_publish": True},
        result_backend=None,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_detect_quorum_queues=True,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        task_create_missing_queues=False,
        task_queues=[job_queue(t) for t in types],
        task_routes={t.task_name: {"queue": t.queue, "routing_key": t.queue} for t in types},
        task_default_queue=types[0].queue if types else "conveyor.default",
        task_default_exchange=EXCHANGE,
        task_default_delivery_mode="persistent",
        # A lost connection gives the job's message back to RabbitMQ, which redelivers it:
        # stop the running copy rather than let two run at once.
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    return app
