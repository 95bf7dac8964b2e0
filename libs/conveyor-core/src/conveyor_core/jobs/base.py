"""What every job type declares, once: name, task, queue, params, result, limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, field_validator

from conveyor_core.settings import Settings

EXCHANGE = "conveyor"
DEAD_LETTER_EXCHANGE = "conveyor.dead-letter"
# The gateway publishes a job's message while its row commits, so a worker can get the
# message first: it waits this long for the row before it drops the message as one whose
# row was never written. The gateway records the job as dispatched only if its row was
# committed within half of it; otherwise the maintenance loop publishes it again.
ROW_WAIT_S = 30.0


class StrictModel(BaseModel):
    """Params models refuse unknown fields: a typo is an error, not a silent default.

    They also refuse what JSON columns cannot hold on every backend: NaN and ±Infinity
    (not JSON at all) and the NUL character (PostgreSQL's jsonb and text reject it).
    Caught here, such a value is the caller's 422, not an INSERT failing later.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _no_nul_character(cls, value: Any) -> Any:
        where = nul_character_path(value)
        if where is not None:
            raise ValueError(f"contains a NUL character (\\u0000){' at ' + where if where else ''}")
        return value


def nul_character_path(value: Any, path: str = "") -> str | None:
    """Where in `value` (strings, lists, dict keys and values) a NUL character is, or None.

    Nested params models are skipped: their own validator has checked their fields.
    """
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_character_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return f"{path}[{key!r}] (in the key)"
            found = nul_character_path(item, f"{path}[{key!r}]")
            if found is not None:
                return found
    return None


class AdmissionDenied(Exception):
    """Params are valid but policy refuses them (for example a command outside the catalog)."""

    status_code = 403


class LimitExceeded(AdmissionDenied):
    """Params are valid but larger than this deployment allows."""

    status_code = 422


@dataclass(frozen=True)
class JobType:
    """One kind of job. Adding a type means one of these plus a worker service (README)."""

    name: str
    # The worker's short name: its service is services/worker-<worker>, its image
    # conveyor/worker-<worker>, its chart values workers.<worker>. Read from here by the
    # worker, the docs, compose, the Procfile and the tests; never derived from `name`.
    worker: str
    params: Any  # a params model class or an Annotated union of them
    result: type[BaseModel]
    summary: str
    example: dict[str, Any]
    soft_time_limit_s: int
    time_limit_s: int
    admit: Callable[[Any, Settings], None] | None = field(default=None, compare=False)
    # Why a result the job returned still means the job failed (a command's non-zero
    # exit), or None: the job then ends `failed` with its result kept.
    failure: Callable[[Any, Any], str | None] | None = field(default=None, compare=False)
    # What this deployment allows beyond the params schema (cmd.run: its command catalog),
    # for callers to read before they are refused.
    policy: Callable[[Settings], dict[str, Any]] | None = field(default=None, compare=False)
    # Params fields that name a file in the artifact store for the job to read. The gateway
    # lets a key name only its own uploads and jobs there; the worker reads a job's output
    # (`jobs/<id>/<name>`) from the attempt that published it. tests/core/test_contract.py
    # checks that every artifact-path field of the params is listed.
    input_artifacts: tuple[str, ...] = ()

    @property
    def service(self) -> str:
        """The worker service's directory and image name, e.g. `worker-ml`."""
        return f"worker-{self.worker}"

    @property
    def task_name(self) -> str:
        return f"conveyor.{self.name}"

    @property
    def queue(self) -> str:
        return f"conveyor.{self.name}"

    @property
    def dead_letter_queue(self) -> str:
        return f"conveyor.{self.name}.dead-letter"

    @cached_property
    def params_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.params)

    def parse_params(self, raw: Any) -> Any:
        return self.params_adapter.validate_python(raw)

    def policy_of(self, settings: Settings) -> dict[str, Any]:
        return {} if self.policy is None else self.policy(settings)

    def failure_of(self, params: Any, result: BaseModel) -> str | None:
        """Why `result` means the job failed, or None if it succeeded."""
        return None if self.failure is None else self.failure(params, result)

    def input_paths(self, params: Any) -> dict[str, str]:
        """The artifact-store paths these params name for the job to read, by field."""
        paths = {name: getattr(params, name, None) for name in self.input_artifacts}
        return {name: path for name, path in paths.items() if isinstance(path, str)}

    def check_admission(self, params: Any, settings: Settings) -> None:
        """Raise AdmissionDenied when policy refuses these (already valid) params."""
        if self.admit is not None:
            self.admit(params, settings)


def queue_arguments(delivery_limit: int) -> dict[str, Any]:
    """Arguments of every job queue; the gateway and workers must declare them identically.

    Quorum queues survive a broker node loss and count deliveries; the delivery limit is
    a backstop behind Conveyor's own attempt counter (a job crashing its worker every time
    ends in the dead-letter queue instead of looping forever).
    """
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    }


# Fixed rather than a setting: changing a queue argument makes RabbitMQ refuse to redeclare
# the queue. Conveyor's own attempt limit (CONVEYOR_MAX_ATTEMPTS) is the one to tune.
QUEUE_DELIVERY_LIMIT = 20
DEAD_LETTER_QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}
