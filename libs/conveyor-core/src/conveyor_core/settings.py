"""All of Conveyor's configuration, read once from `CONVEYOR_*` environment variables.

Every field here is a row of the settings table in the README and a key of the Helm
chart's ConfigMap; keep the three in step.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CatalogCommand(BaseModel):
    """One command that `cmd.run` may execute: its executable and how far callers may go."""

    executable: str = Field(
        description="Absolute path of the program, or a name looked up on PATH."
    )
    max_args: int = Field(default=16, ge=0, description="Most arguments a caller may pass.")
    arg_pattern: str | None = Field(
        default=None,
        description="Regular expression each argument must match in full; none: any "
        "argument. List the options you allow, never one that names a file.",
    )
    description: str = ""

    @field_validator("arg_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            re.compile(pattern)
        return pattern


# Each command's arguments, reviewed (Landlock is the guarantee, this is defence in depth;
# docs/guarantees.md says what holds per command):
# - echo: coreutils echo has no option that names a file; any text.
# - sleep: a number with an optional unit.
# - date: +FORMAT, UTC and output-style switches, --date=STRING without quotes or `=`
#   (so no TZ="file"). Never -f/--file or -r/--reference, which read or stat a file.
# - uname: its switches; none takes a value.
# - sha256sum: no arguments, so it hashes stdin only.
_DATE_ARGS = (
    r"\+.*|-u|--utc|--universal|-R|--rfc-email"
    r"|-I(date|hours|minutes|seconds|ns)?|--iso-8601(=(date|hours|minutes|seconds|ns))?"
    r"|--rfc-3339=(date|seconds|ns)|--date=[-A-Za-z0-9 :+.,/@]*"
)
_UNAME_ARGS = (
    r"-[asnrvmpio]{1,9}|--(all|kernel-name|nodename|kernel-release|kernel-version"
    r"|machine|processor|hardware-platform|operating-system)"
)

DEFAULT_COMMAND_CATALOG: dict[str, CatalogCommand] = {
    "echo": CatalogCommand(executable="echo", description="Print the arguments."),
    "sleep": CatalogCommand(
        executable="sleep",
        max_args=1,
        arg_pattern=r"[0-9]{1,9}(\.[0-9]{1,9})?[smhd]?",
        description="Wait N seconds.",
    ),
    "date": CatalogCommand(
        executable="date", max_args=2, arg_pattern=_DATE_ARGS, description="Print the date."
    ),
    "uname": CatalogCommand(
        executable="uname", max_args=2, arg_pattern=_UNAME_ARGS, description="Print system info."
    ),
    "sha256sum": CatalogCommand(executable="sha256sum", max_args=0, description="Hash stdin."),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    # --- connections
    broker_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672//"),
        description="RabbitMQ AMQP URL.",
    )
    broker_heartbeat_s: int = Field(
        default=30,
        ge=2,
        description="AMQP heartbeat of the workers' broker connection: a worker cut off from "
        "RabbitMQ notices within about twice this, and stops the job the broker redelivered.",
    )
    database_url: SecretStr = Field(
        default=SecretStr("sqlite:///var/conveyor.db"),
        description="Job store URL: sqlite:///path or postgresql+psycopg://user:pw@host/db.",
    )
    artifact_url: str = Field(
        default="var/artifacts",
        description="Artifact store root: a local directory or an fsspec URL (s3://bucket/prefix).",
    )

    # --- gateway
    api_host: str = Field(default="127.0.0.1", description="Gateway bind address.")
    api_port: int = Field(default=8000, description="Gateway port.")
    api_access_log: bool = Field(
        default=False,
        description="Log a line per HTTP request. Off by default: it costs a few % of the "
        "gateway's CPU per request, and conveyor_http_requests_total counts the same.",
    )
    publish_timeout_s: float = Field(
        default=1.5, gt=0, description="Longest wait for RabbitMQ's publisher confirm before 503."
    )
    auto_migrate: bool = Field(
        default=True, description="Gateway runs Alembic migrations at start-up."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        description="Largest accepted request body, uploads excepted: it bounds what one "
        "request costs the gateway to validate. Larger inputs go through PUT /v1/files.",
    )
    max_upload_bytes: int = Field(
        default=256 * 1024 * 1024, description="Largest file accepted by PUT /v1/files/{name}."
    )
    max_uploads_per_key: int = Field(
        default=100, ge=1, description="Most files one key may keep in uploads (PUT /v1/files)."
    )
    max_upload_bytes_per_key: int = Field(
        default=2 * 1024**3,
        ge=1,
        description="Most bytes one key's uploads may take together; a replaced file's old "
        "size does not count.",
    )
    upload_retention_s: float = Field(
        default=7 * 24 * 3600.0,
        ge=0,
        description="Uploads not written for this long are deleted by the gateway's "
        "maintenance loop. 0 keeps them forever.",
    )
    auth_enabled: bool = Field(
        default=True,
        description="Require an API key (Authorization: Bearer). `make run` turns it off on "
        "localhost; never turn it off on a reachable address.",
    )
    local_hosts: list[str] = Field(
        default=["127.0.0.1", "localhost", "::1"],
        description="With authentication off, the only Host names the gateway answers to and "
        "the only origins it takes POST/PUT/DELETE from: a web page cannot drive a local "
        "gateway through DNS rebinding or a cross-site form. `*` turns the check off.",
    )
    auth_cache_ttl_s: float = Field(
        default=10.0,
        ge=0,
        description="How long a verified key is trusted before it is checked again: a revoked "
        "key stops working within this time.",
    )
    submit_rate_per_s: float = Field(
        default=100.0,
        ge=0,
        description="Sustained submissions per second per key and gateway process (0: no "
        "limit); beyond it, 429 with Retry-After.",
    )
    submit_burst: int = Field(default=200, ge=1, description="Submissions a key may burst.")
    max_queued_per_key: int = Field(
        default=10_000, ge=0, description="Most jobs one key may have queued (0: no limit)."
    )
    max_running_per_key: int = Field(
        default=0,
        ge=0,
        description="Most jobs of one type that one API key may have running at once (set on "
        "that type's workers). A job over it goes to the back of its queue, so other keys' "
        "jobs run meanwhile. 0: no limit. Not applied with auth off (no keys to share among).",
    )

    maintenance_interval_s: float = Field(
        default=10.0, gt=0, description="How often the gateway repairs undispatched and stale jobs."
    )
    undispatched_after_s: float = Field(
        default=30.0,
        gt=0,
        description="A queued job whose message was never confirmed (gateway died mid-submit) "
        "is published again after this long.",
    )
    stale_job_after_s: float = Field(
        default=300.0,
        gt=0,
        description="A running job without a heartbeat for this long is failed, or queued "
        "again if its message was already handed over (see CONVEYOR_ACK_HANDOVER_AFTER_S).",
    )

    # --- live event stream (GET /v1/jobs/{id}/events)
    events_keepalive_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between `: keep-alive` comments on an open event stream, so "
        "proxies keep idle streams open.",
    )
    events_poll_interval_s: float = Field(
        default=0.5,
        gt=0,
        description="SQLite only: how often the gateway looks for new events, in one query "
        "for all its streams (PostgreSQL pushes them with LISTEN/NOTIFY).",
    )
    events_max_streams: int = Field(
        default=500,
        ge=1,
        description="Most event streams one gateway process holds open; beyond it, 503 with "
        "Retry-After.",
    )
    events_retention_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="Events of a job are deleted this long after it finished (its state, "
        "result and output stay on the job).",
    )
    job_retention_s: float = Field(
        default=30 * 24 * 3600.0,
        ge=0,
        description="Finished jobs are deleted this long after they finished: the row, its "
        "events and its artifacts. 0 keeps them forever.",
    )
    events_max_output_lines: int = Field(
        default=5000,
        ge=0,
        description="Most output lines of one cmd.run attempt sent as events; later lines "
        "are only in the result.",
    )
    events_output_interval_s: float = Field(
        default=0.25,
        gt=0,
        description="How long a worker gathers a command's output lines before storing them "
        "as events, in one write.",
    )

    # --- workers
    worker_concurrency: int = Field(default=2, ge=1, description="Pool processes per worker.")
    worker_max_jobs: int = Field(
        default=0,
        ge=0,
        description="Stop the worker after a pool process ran this many jobs (0: never). "
        "For KEDA ScaledJob pods, with concurrency 1: one job, then exit.",
    )
    worker_idle_exit_s: float = Field(
        default=0,
        ge=0,
        description="Stop the worker (exit 0) after it held no job for this long (0: never). "
        "For KEDA ScaledJob pods: one that finds no message does not wait for its deadline.",
    )
    heartbeat_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a running job's heartbeat, progress and cancel flag sync.",
    )
    ack_handover_after_s: float = Field(
        default=900.0,
        ge=0,
        description="A job still running this long after it started has its message acked, "
        "and from then on the heartbeat reaper recovers it if its worker is lost. Keep it "
        "below RabbitMQ's consumer_timeout (30 min by default) minus a minute. 0: never, and "
        "every job must then finish within consumer_timeout.",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Deliveries of one job before it is failed and dead-lettered."
    )
    store_retry_s: float = Field(
        default=60.0, ge=0, description="How long a worker retries an unreachable job store."
    )
    cancel_grace_s: float = Field(
        default=5.0,
        ge=0,
        description="Time a cancelled job gets to stop before its process is killed.",
    )
    soft_time_limit_s: int | None = Field(
        default=None, description="Override the job type's soft time limit (seconds)."
    )
    time_limit_s: int | None = Field(
        default=None, description="Override the job type's hard time limit (seconds)."
    )

    # --- limits on what callers control
    max_inline_rows: int = Field(default=10_000, description="Most rows in data.transform params.")
    inline_result_rows: int = Field(
        default=1_000, description="Larger transform outputs go to a Parquet artifact."
    )
    ml_max_samples: int = Field(default=2_000_000, description="Largest synthetic ML dataset.")
    ml_memory_budget_bytes: int = Field(
        default=2 * 1024**3,
        ge=1024**2,
        description="Memory a training job's data set may take, counted as three float64 "
        "copies of the features (data, train/test split, fitting): a larger synthetic set is "
        "refused with 422, a larger file fails the job once read.",
    )
    cmd_max_timeout_s: int = Field(default=3600, description="Cap on cmd.run timeout_s.")
    cmd_max_output_bytes: int = Field(
        default=1024 * 1024, description="stdout/stderr kept per stream; the rest is dropped."
    )
    cmd_max_stdin_bytes: int = Field(default=1024 * 1024, description="Largest cmd.run stdin.")
    cmd_run_as_user: str = Field(
        default="nobody", description="Unprivileged user commands run as when the worker is root."
    )
    cmd_max_memory_bytes: int = Field(
        default=512 * 1024 * 1024, description="RLIMIT_AS of commands."
    )
    cmd_max_processes: int = Field(default=64, description="RLIMIT_NPROC of commands.")
    cmd_max_open_files: int = Field(default=256, description="RLIMIT_NOFILE of commands.")
    cmd_allow_weak_isolation: bool = Field(
        default=False,
        description="Run cmd.run even where Landlock or the seccomp filter cannot apply, "
        "so commands reach more of what the worker's uid can. Off: such jobs fail.",
    )
    command_catalog: dict[str, CatalogCommand] = Field(
        default_factory=lambda: dict(DEFAULT_COMMAND_CATALOG),
        description="JSON object: command name -> {executable, max_args, arg_pattern}.",
    )

    # --- observability
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level of every service."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Worker probe server address.")
    metrics_port: int = Field(
        default=0, description="Worker /healthz and /metrics port; 0 turns the server off."
    )

    @property
    def artifact_root(self) -> str:
        """The artifact URL with a local relative path made absolute."""
        if "://" in self.artifact_url:
            return self.artifact_url
        return str(Path(self.artifact_url).resolve())


@lru_cache
def get_settings() -> Settings:
    return Settings()
