"""Celery's consumer without native delayed delivery.

With quorum queues Celery declares 28 `celery_delayed_*` queues and exchanges for
countdown/ETA tasks. Conveyor never schedules tasks for later, and RabbitMQ should hold
no queue that Conveyor did not declare on purpose.
"""

from celery.worker.consumer import Consumer


class JobConsumer(Consumer):  # type: ignore[misc]
    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        default_steps = [
            step
            for step in Consumer.Blueprint.default_steps
            if not step.endswith(":DelayedDelivery")
        ]
