"""The blog pattern's Celery app: RabbitMQ broker, `rpc://` result backend, defaults otherwise.

The task modules sit next to this file and nothing imports them here, exactly as in the
pattern this reproduces: `celery -A tasks worker` (its documented start command) loads this
package, finds `app`, and registers none of the three tasks. The bench notes that and starts
the measured worker with `--include tasks.ml,tasks.commands,tasks.data` so it runs at all.

The bench's second Celery system, the peer a Celery user would pick for durable results,
is this same app switched by two variables (absent: the pattern exactly as above):
`BASELINE_RESULT_BACKEND` (`db+postgresql+psycopg://...`: Celery's SQLAlchemy result
backend) and `BASELINE_DURABLE=1` (STARTED recorded, acknowledged after the task, one
unacknowledged message per pool process).
"""

import os

from celery import Celery

# The pattern hard-codes the broker; the bench points it at a per-run vhost.
app = Celery(
    "tasks",
    broker=os.environ.get("BROKER_URL", "amqp://guest:guest@localhost:5672//"),
    backend=os.environ.get("BASELINE_RESULT_BACKEND", "rpc://"),
)
if os.environ.get("BASELINE_DURABLE") == "1":
    app.conf.update(task_track_started=True, task_acks_late=True, worker_prefetch_multiplier=1)
