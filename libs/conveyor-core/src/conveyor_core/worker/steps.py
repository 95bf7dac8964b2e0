"""Work a worker's main process does on a timer, beside consuming (a Celery bootstep)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import bootsteps

ConsumerHook = Callable[[Any], None]


def timer_step(
    step_name: str, interval_s: float, tick: ConsumerHook, on_start: ConsumerHook | None = None
) -> type[bootsteps.StartStopStep]:
    """A consumer bootstep: `on_start(consumer)` when consuming (re)starts, then
    `tick(consumer)` every `interval_s` on the worker's event loop, until it stops."""

    class TimerStep(bootsteps.StartStopStep):  # type: ignore[misc]
        # Celery keeps one step per name: each timer step needs its own.
        name = f"conveyor.{step_name}"
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, consumer: Any, **kwargs: Any) -> None:
            super().__init__(consumer, **kwargs)
            self.timer_entry: Any = None

        def start(self, consumer: Any) -> None:
            if on_start is not None:
                on_start(consumer)
            self.timer_entry = consumer.timer.call_repeatedly(interval_s, tick, (consumer,))

        def stop(self, consumer: Any) -> None:
            if self.timer_entry is not None:
                self.timer_entry.cancel()
                self.timer_entry = None

    return TimerStep
