"""Real processes for the tests and the bench: free ports, a RabbitMQ vhost and a
PostgreSQL database per run (removed afterwards), and handles of started processes.

tests/support/stack.py and bench/procs.py build on it, so the bench needs no test code.
It is a workspace member that no service depends on: no image holds it.
"""

from conveyor_harness.postgres import POSTGRES_ADMIN_DSN, postgres_database
from conveyor_harness.processes import (
    HOST,
    LOG_TAIL,
    Proc,
    check_alive,
    free_port,
    start,
    stop_all,
)
from conveyor_harness.rabbitmq import RABBITMQ_HOST, Vhost, amqp_url, rabbitmq_vhost, rabbitmqctl

__all__ = [
    "HOST",
    "LOG_TAIL",
    "POSTGRES_ADMIN_DSN",
    "RABBITMQ_HOST",
    "Proc",
    "Vhost",
    "amqp_url",
    "check_alive",
    "free_port",
    "postgres_database",
    "rabbitmq_vhost",
    "rabbitmqctl",
    "start",
    "stop_all",
]
