"""A RabbitMQ vhost per run, made and removed with rabbitmqctl."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

RABBITMQ_HOST = "127.0.0.1"


def rabbitmqctl(*args: str, attempts: int = 3) -> str:
    """Run `rabbitmqctl -q ARGS` and return its output; retried, since the CLI's own Erlang
    node now and then fails to start while other sessions run theirs (a whole bench run
    was lost to one such failure)."""
    for attempt in range(1, attempts + 1):
        result = subprocess.run(  # rabbitmqctl from PATH, wherever the install put it
            ["rabbitmqctl", "-q", *args],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode == 0 or attempt == attempts:
            break
        time.sleep(2 * attempt)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, result.args, result.stdout, result.stderr
        )
    return result.stdout


def amqp_url(vhost: str) -> str:
    """The broker URL of `vhost` on the local RabbitMQ, as the guest user."""
    return f"amqp://guest:guest@{RABBITMQ_HOST}:5672/{vhost}"


@dataclass(frozen=True)
class Vhost:
    name: str

    @property
    def url(self) -> str:
        return amqp_url(self.name)


@contextlib.contextmanager
def rabbitmq_vhost(prefix: str) -> Iterator[Vhost]:
    """A fresh vhost `<prefix>-<random>` the guest user may use; deleted afterwards, with
    every queue in it."""
    vhost = Vhost(f"{prefix}-{uuid.uuid4().hex[:10]}")
    rabbitmqctl("add_vhost", vhost.name)
    try:
        rabbitmqctl("set_permissions", "-p", vhost.name, "guest", ".*", ".*", ".*")
        yield vhost
    finally:
        rabbitmqctl("delete_vhost", vhost.name)
