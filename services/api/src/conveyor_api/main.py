"""The gateway application: wiring only; the work is in routes/ and service.py."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs import JOB_TYPES
from conveyor_core.metrics import exposition
from conveyor_core.settings import Settings, get_settings
from conveyor_core.store.migrate import upgrade_to_head
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST

from conveyor_api.auth import KeyVerifier
from conveyor_api.errors import install_error_handlers
from conveyor_api.event_hub import EventHub
from conveyor_api.event_stream import JobEventStream
from conveyor_api.gateway_app import GatewayApp
from conveyor_api.limits import BodySizeLimit
from conveyor_api.maintenance import Maintenance
from conveyor_api.metrics import BROKER_CONNECTED, HttpMetrics
from conveyor_api.publisher import JobPublisher
from conveyor_api.ratelimit import TokenBuckets
from conveyor_api.routes import compat, console, docs, files, health, job_events, jobs, queues
from conveyor_api.service import JobService
from conveyor_api.unit_of_work import open_work_runner

log = logging.getLogger("conveyor.api")

DESCRIPTION = (
    "Submit long-running jobs, poll their state or follow it live, fetch their results. "
    "A `202` means the job is durably queued.\n\nJob types:\n\n"
    + "".join(f"- `{job.name}`: {job.summary}\n" for job in JOB_TYPES.values())
)


def freeze_startup_objects() -> None:
    """Exclude everything alive after startup from the cyclic garbage collector's scans.

    Modules, models, routes and settings live as long as the process; a full collection
    would walk all of them (over 100,000 objects, tens of ms with every request on hold),
    now it walks only what requests created since. Garbage is collected first so that
    nothing collectable is frozen.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> GatewayApp:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            upgrade_to_head(settings.database_url.get_secret_value())
        runner = open_work_runner(settings.database_url.get_secret_value())
        publisher = JobPublisher(
            settings.broker_url.get_secret_value(),
            list(JOB_TYPES.values()),
            settings.publish_timeout_s,
        )
        await publisher.start()
        app.state.settings = settings
        app.state.runner = runner
        app.state.publisher = publisher
        app.state.artifacts = ArtifactStore(settings.artifact_root)
        BROKER_CONNECTED.set_function(lambda: float(publisher.is_connected))
        jobs = JobService(runner, publisher, settings.max_queued_per_key)
        app.state.jobs = jobs
        app.state.key_verifier = KeyVerifier(runner, settings.auth_cache_ttl_s)
        app.state.submit_buckets = TokenBuckets(settings.submit_rate_per_s, settings.submit_burst)
        if not settings.auth_enabled:
            log.warning(
                "authentication is OFF (CONVEYOR_AUTH_ENABLED=false): every caller can "
                "see and cancel every job; use this on localhost only"
            )
        hub = EventHub(runner, settings, settings.database_url.get_secret_value())
        app.state.event_hub = hub
        app.state.event_streams = JobEventStream(runner, hub)
        maintenance = Maintenance(runner, publisher, jobs.dispatched, app.state.artifacts, settings)
        repairs = asyncio.create_task(maintenance.run_forever())
        event_wakeups = asyncio.create_task(hub.run_forever())
        freeze_startup_objects()
        try:
            yield
        finally:
            event_wakeups.cancel()
            repairs.cancel()
            try:
                await jobs.dispatched.flush()
            except Exception:  # the next gateway's maintenance republishes what is left
                log.warning("could not record every dispatched job before stopping")
            await runner.close()
            await publisher.close()

    app = GatewayApp(
        title="Conveyor",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # routes/docs.py serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    body_limits = {
        "max_bytes": settings.max_body_bytes,
        "max_upload_bytes": settings.max_upload_bytes,
    }
    app.add_middleware(BodySizeLimit, **body_limits)
    app.add_middleware(HttpMetrics)
    install_error_handlers(app)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(jobs.router)
    app.include_router(job_events.router)
    app.include_router(files.router)
    app.include_router(queues.router)
    app.include_router(health.router)
    app.include_router(compat.router)
    app.include_router(console.router)
    app.include_router(docs.router)
    # Ahead of the middleware, under the same limits.
    app.install_hot_routes(jobs.HOT_ROUTES, **body_limits)
    if not settings.auth_enabled and "*" not in settings.local_hosts:
        app.local_hosts = frozenset(host.lower() for host in settings.local_hosts)
    return app
