"""Composition root of the ingest service: `minio.events` consumer, HTTP API, sweeper and outbox relay."""

from __future__ import annotations

import asyncio

import uvicorn

from infiniteflow_common.runtime import Runtime
from infiniteflow_common.topics import Topic
from services.ingest.api import ApiDeps, create_api, kafka_admin_check
from services.ingest.config import IngestSettings
from services.ingest.job_events import JobEventHub
from services.ingest.pipeline_gauges import PipelineMonitor
from services.ingest.source_events import SourceEventHandler
from services.ingest.start import JobStarter
from services.ingest.sweeper import Sweeper


def build(settings: IngestSettings) -> Runtime:
    """The runtime with its consumer and background tasks registered (nothing is opened yet)."""
    runtime = Runtime(settings, "ingest")
    starter = JobStarter(
        sessions=runtime.sessions, storage=runtime.storage, outbox=runtime.outbox, settings=settings
    )
    job_events = JobEventHub(settings.database_url.get_secret_value())
    runtime.consume(
        Topic.MINIO_EVENTS.value,
        SourceEventHandler(incoming_bucket=settings.incoming_bucket, start_job=starter),
    )
    api = create_api(
        ApiDeps(
            settings=settings,
            sessions=runtime.sessions,
            storage=runtime.storage,
            starter=starter,
            kafka_check=kafka_admin_check(settings.kafka_bootstrap),
            job_events=job_events,
        )
    )
    # No lifespan: the API's resources belong to the Runtime, which opens and closes them.
    server = uvicorn.Server(
        uvicorn.Config(
            api,
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=10,
        )
    )
    sweeper = Sweeper(sessions=runtime.sessions, storage=runtime.storage, starter=starter, settings=settings)
    runtime.background(lambda: serve_until_cancelled(server))
    runtime.background(sweeper.run_forever)
    monitor = PipelineMonitor(
        sessions=runtime.sessions,
        kafka_bootstrap=settings.kafka_bootstrap,
        engine_mpix_per_s=settings.engine_mpix_per_s,
    )
    runtime.background(monitor.run_forever)
    runtime.background(job_events.run_forever)
    # publishes the outbox events a crash or an absent broker kept from their after-commit relay
    runtime.background(runtime.outbox.run_forever)
    return runtime


async def serve_until_cancelled(server: uvicorn.Server) -> None:
    """Serve the API; when the Runtime cancels us (SIGTERM, a fatal consumer), shut uvicorn down
    gracefully (in-flight requests finish, the lifespan ends) instead of cancelling it mid-request."""
    serving = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        server.should_exit = True
        await asyncio.wait([serving], timeout=15)
        raise


def main() -> None:
    """Run ingest until SIGTERM/SIGINT (`infiniteflow run ingest`)."""
    raise SystemExit(asyncio.run(build(IngestSettings()).run()))
