"""The blog pattern's Celery app: RabbitMQ broker, `rpc://` result backend, defaults otherwise.

The task modules sit next to this file and nothing imports them here, exactly as in the
pattern this reproduces: `celery -A tasks worker` (its documented start command) loads this
package, finds `app`, and registers none of the three tasks. The bench notes that and starts
the measured worker with `--include tasks.ml,tasks.commands,tasks.data` so it runs at all.
"""

import os

from celery import Celery

# The pattern hard-codes the broker; the bench points it at a per-run vhost.
app = Celery(
    "tasks",
    broker=os.environ.get("BROKER_URL", "amqp://guest:guest@localhost:5672//"),
    backend="rpc://",
)
