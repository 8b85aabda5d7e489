"""`JobStarter`: one source object (a bucket event, an API upload, a sweeper find) → a started job.

Steps, each safe to repeat: create the job row idempotently by (bucket, key, etag); unless it was
already handled, download the object to a scratch file (size limit first) and probe it safely, outside
any transaction; then, under a short row lock that re-checks the job, either record the probe and
stage `VideoUploaded`, or fail the job and stage `JobFailed`, in the Kafka outbox of the same
transaction (`infiniteflow_common.outbox`): the event is published after that commit, and only if it
commits, so a crash on either side neither loses the job nor announces one never recorded. The row
lock makes one of two attempts (the API and the MinIO event of the same upload, or two ingest
replicas) record the job; the other sees it handled.

This is the `start_job` use case every entry point calls: the bucket consumer and the sweeper through
`start`, the API through `store_upload` then `start_upload`. Options are parsed once where they arrive
(the API's form fields, else the object's user metadata) into `UserOptions`, which travel from there.

Permanent problems (bad params, hostile or broken files, an object gone or replaced) end as a failed
job with a stable code; transient ones (MinIO, PostgreSQL) propagate so the consumer retries. Kafka
away does not hold a job back: it is recorded, and its event waits in the outbox for the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

from minio import Minio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.db import Job, transaction
from infiniteflow_common.domain import JobStatus, RequestedParams
from infiniteflow_common.errors import InfiniteFlowError
from infiniteflow_common.events import JobFailed, JobParams, MediaProbe, UploadSource, VideoUploaded
from infiniteflow_common.failures import ScratchFullError, is_disk_full
from infiniteflow_common.jobs import create_job, fail, read_job, record_start
from infiniteflow_common.minio_events import ObjectCreated
from infiniteflow_common.observability import get_logger
from infiniteflow_common.outbox import Outbox
from infiniteflow_common.output import OutputOptions, available_encoders
from infiniteflow_common.progress import JobProgress
from infiniteflow_common.storage import ObjectUnavailableError, download
from infiniteflow_common.streams import StreamUnsupportedError, plan_streams
from infiniteflow_common.tenants import tenant_of_key
from infiniteflow_common.topics import Topic
from services.ingest import metrics
from services.ingest.config import IngestSettings
from services.ingest.params import (
    InvalidParams,
    ParamDefaults,
    UserOptions,
    check_against_probe,
    input_fps,
    output_metadata,
    params_metadata,
    parse_options,
    resolve_output,
)
from services.ingest.probe import ProbeError, ProbeLimits, check_frame_budget, limits_from, probe_source

log = get_logger()


class UploadTooLargeError(InfiniteFlowError):
    """The object is over the configured size limit (permanent)."""

    code = "E_UPLOAD_TOO_LARGE"


PERMANENT = (InvalidParams, ProbeError, ObjectUnavailableError, UploadTooLargeError, StreamUnsupportedError)
"""Failures that no retry can fix: the job fails and the user is told."""


def _handled(job: Job) -> bool:
    """Whether an earlier attempt already took the job through ingest (announced or rejected)."""
    return job.status != JobStatus.PENDING.value or job.probe is not None


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[uuid.UUID, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: uuid.UUID) -> AsyncIterator[None]:
        """Hold the lock of `key` for the block."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def param_defaults(settings: IngestSettings) -> ParamDefaults:
    """The option defaults and allowed values from the settings."""
    return ParamDefaults(
        multiplier=settings.default_multiplier,
        engine=settings.default_engine,
        quality=settings.default_quality,
        engines=tuple(settings.allowed_engines),
        qualities=tuple(settings.allowed_qualities),
        model=settings.default_model,
        models=tuple(settings.allowed_models),
        max_fps=settings.max_fps,
        encoders=available_encoders(),
        webhook_allowed=settings.webhook_allowed_destinations,
    )


@dataclass(frozen=True)
class Uploader:
    """Who uploaded an object through the API: its job is theirs (None: an anonymous caller)."""

    tenant_id: str | None


@dataclass(frozen=True)
class StartResult:
    """What one start attempt did: the job, its status afterwards, and whether it was new."""

    job_id: uuid.UUID
    status: str
    created: bool
    handled_now: bool
    error_code: str | None = None


class JobStarter:
    """Starts jobs; also the `start_job` callable of `SourceEventHandler` (source "bucket")."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        storage: Minio,
        outbox: Outbox,
        settings: IngestSettings,
        uploaded_topic: str = Topic.VIDEO_UPLOADED.value,
        failed_topic: str = Topic.JOB_FAILED.value,
    ) -> None:
        self.sessions = sessions
        self.storage = storage
        self.outbox = outbox
        self.settings = settings
        self.uploaded_topic = uploaded_topic
        self.failed_topic = failed_topic
        self.defaults = param_defaults(settings)
        self.limits: ProbeLimits = limits_from(settings)
        self._in_hand = KeyedLocks()

    async def __call__(self, record: ObjectCreated) -> None:
        """Start the job of a bucket notification."""
        await self.start(record, source="bucket")

    def options_of(self, record: ObjectCreated) -> UserOptions:
        """The options of an object we learnt about from the bucket (its user metadata), parsed once."""
        return parse_options(record.user_metadata, self.defaults)

    async def start(
        self,
        record: ObjectCreated,
        *,
        source: UploadSource,
        options: UserOptions | None = None,
        uploader: Uploader | None = None,
    ) -> StartResult:
        """Create (or find) the job of `record` and take it through ingest unless already done.

        `options` are the upload's parsed options (the API's form fields); by default its user metadata.
        """
        options = options or self.options_of(record)
        job, created = await self.create(record, source=source, uploader=uploader, options=options)
        return await self.process(job.id, record, source=source, created=created, options=options)

    async def store_upload(
        self, upload: BinaryIO, *, bucket: str, key: str, size: int, content_type: str, options: UserOptions
    ) -> ObjectCreated:
        """Store an API upload under `key` with its parsed options as user metadata, so the upload's own
        bucket event (or the sweeper) derives the same job; the stored object's record."""
        if options.params is None or options.output is None:
            raise options.error or InvalidParams("the upload's options were not parsed")
        metadata = params_metadata(options.params) | output_metadata(options.output)
        written = await asyncio.to_thread(
            self.storage.put_object,
            bucket,
            key,
            upload,
            size,
            content_type=content_type,
            metadata=metadata,  # type: ignore[arg-type]
        )
        return object_record(
            bucket=bucket,
            key=key,
            etag=str(written.etag),
            size=size,
            metadata=metadata,
            version_id=written.version_id,
            created_at=datetime.now(UTC),
        )

    async def start_upload(
        self, record: ObjectCreated, *, options: UserOptions, uploader: Uploader
    ) -> StartResult:
        """Start the job of a stored API upload at once, with the options parsed from its form.

        A failure after the job row exists is logged, not raised: the upload's own bucket event (or the
        sweeper) finishes the start, and the caller already has its job.
        """
        job, created = await self.create(record, source="api", uploader=uploader, options=options)
        try:
            return await self.process(job.id, record, source="api", created=created, options=options)
        except Exception as exc:
            log.warning("api start deferred to the bucket event", job_id=str(job.id), error=repr(exc))
            return StartResult(job.id, job.status, created, handled_now=False)

    async def create(
        self,
        record: ObjectCreated,
        *,
        source: UploadSource,
        uploader: Uploader | None = None,
        options: UserOptions | None = None,
    ) -> tuple[Job, bool]:
        """The job row of `record` (created when new), by its natural key (bucket, key, etag).

        The job belongs to `uploader` (the authenticated caller of an API upload) when given, else to
        the tenant whose bucket prefix holds the key.
        """
        options = options or self.options_of(record)
        # The priority is a column too (the workers' claim query orders by it); bad params leave it 0.
        params: JobParams | RequestedParams = options.params or RequestedParams(
            requested=dict(options.requested)
        )
        priority = options.params.priority if options.params is not None else 0
        # Stored with the row, not only after the probe: the splitter reads `dedupe` from it and may
        # see video.uploaded before the probe's update commits. `codec=source` is resolved later.
        output = options.output
        async with transaction(self.sessions) as session:
            if uploader is not None:
                tenant_id = uploader.tenant_id
            else:
                tenant = await tenant_of_key(session, record.key)
                tenant_id = tenant.id if tenant is not None else None
            job, created = await create_job(
                session,
                tenant_id=tenant_id,
                source=source,
                source_bucket=record.bucket,
                source_key=record.key,
                source_etag=record.etag,
                source_version=record.version_id,
                size_bytes=record.size,
                params=params,
                priority=priority,
                output_options=output,
            )
            if uploader is not None and job.tenant_id != tenant_id:
                # the upload's own bucket event made the row first, judging by the key alone
                job.tenant_id = tenant_id
        if created:
            metrics.JOBS_CREATED.labels(source).inc()
            log.info(
                "job created",
                job_id=str(job.id),
                source=source,
                bucket=record.bucket,
                key=record.key,
                tenant=job.tenant_id,
            )
        return job, created

    async def process(
        self,
        job_id: uuid.UUID,
        record: ObjectCreated,
        *,
        source: UploadSource,
        created: bool = False,
        options: UserOptions | None = None,
    ) -> StartResult:
        """Probe and announce the job unless another attempt already did.

        The download and the ffprobe runs happen outside any transaction and hold no pooled connection
        (a few large uploads must not starve every other request); the outcome is then recorded under a
        short row lock that re-checks the job, so of two attempts (the API and the upload's bucket event,
        or two replicas) exactly one announces it. In one process the second attempt waits for the first
        instead of probing the same file again.
        """
        bound = log.bind(job_id=str(job_id), source=source)
        async with self._in_hand.hold(job_id):
            async with self.sessions() as session:
                job = await read_job(session, job_id)
            if _handled(job):
                metrics.REPLAYS.labels(source).inc()
                bound.info("job already handled", status=job.status)
                return StartResult(job.id, job.status, created, handled_now=False)
            options = options or self.options_of(record)
            params = options.params
            failure: InfiniteFlowError | None = options.error
            if failure is None:
                # parsed, or `error` says why not
                assert params is not None
                assert options.output is not None
                try:
                    probe, streams = await self._fetch_and_probe(job_id, record, params)
                    check_against_probe(params, probe)
                    output = with_container(
                        resolve_output(options.output, probe, self.defaults), streams, probe
                    )
                except (*PERMANENT, OSError) as exc:
                    if isinstance(exc, OSError) and not is_disk_full(exc):
                        raise
                    failure = ScratchFullError.during("ingest", exc) if isinstance(exc, OSError) else exc
            async with transaction(self.sessions) as session:
                job = await read_job(session, job_id, lock=True)
                if _handled(job):  # another replica recorded its probe while ours ran
                    metrics.REPLAYS.labels(source).inc()
                    bound.info("job already handled", status=job.status)
                    return StartResult(job.id, job.status, created, handled_now=False)
                if failure is not None:
                    await self._reject(session, job, record, params, failure)
                else:
                    assert params is not None  # parsed, or `failure` says why not
                    # The announcement is staged in the transaction that records the start, so the
                    # two commit together: a crash on either side of the commit neither loses the
                    # job nor announces one that was not recorded. The splitter reads the output
                    # options recorded here; it can only hear of the job once they are committed.
                    await self.outbox.stage(
                        session,
                        self.uploaded_topic,
                        VideoUploaded(
                            job_id=job.id,
                            source=source,
                            bucket=record.bucket,
                            key=record.key,
                            etag=record.etag,
                            version_id=record.version_id,
                            size_bytes=record.size,
                            params=params,
                            probe=probe,
                            uploaded_at=record.event_time or datetime.now(UTC),
                        ),
                    )
                    await record_start(
                        session,
                        job_id,
                        params=params,
                        probe=probe,
                        output_options=output,
                        progress=JobProgress.STARTED,
                    )
            await self.outbox.relay_after_commit(job_id=str(job_id))
        if failure is not None:
            metrics.JOBS_REJECTED.labels(failure.code).inc()
            bound.warning("job rejected at ingest", code=failure.code, reason=failure.message)
            return StartResult(job_id, JobStatus.FAILED.value, created, True, failure.code)
        metrics.JOBS_STARTED.labels(source).inc()
        bound.info(
            "job started",
            width=probe.width,
            height=probe.height,
            frames=probe.frame_count,
            fps=f"{probe.fps_num}/{probe.fps_den}",
            vfr=probe.is_vfr,
        )
        return StartResult(job_id, JobStatus.PENDING.value, created, True)

    async def _reject(
        self,
        session: AsyncSession,
        job: Job,
        record: ObjectCreated,
        params: JobParams | None,
        exc: InfiniteFlowError,
    ) -> None:
        """Fail the job with `exc`'s code and stage its `JobFailed`, in the caller's transaction."""
        await self.outbox.stage(
            session,
            self.failed_topic,
            JobFailed(
                job_id=job.id,
                bucket=record.bucket,
                key=record.key,
                params=params,
                stage="ingest",
                chunk_index=None,
                error_code=exc.code,
                error_message=exc.message,
                failed_at=datetime.now(UTC),
            ),
        )
        await fail(session, job.id, exc.code, exc.message)

    async def _fetch_and_probe(
        self, job_id: uuid.UUID, record: ObjectCreated, params: JobParams
    ) -> tuple[MediaProbe, list[dict[str, Any]]]:
        limit = self.settings.max_upload_bytes
        if record.size > limit:
            raise UploadTooLargeError(_too_large(record.size, limit))
        self.settings.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.settings.scratch_dir, prefix=f"{job_id}-") as scratch:
            # Our own file name: the user's key never reaches the file system or ffprobe's arguments.
            path = Path(scratch) / "source"
            await asyncio.to_thread(self._download, record, path, limit)
            started = time.perf_counter()
            try:
                # A target rate's factor is only known after the probe; it is checked below.
                factor = Fraction(params.multiplier) if params.multiplier is not None else None
                probe, streams = await probe_source(path, self.limits, frame_factor=factor)
            finally:
                metrics.PROBE_SECONDS.observe(time.perf_counter() - started)
        if params.target_fps is not None:
            check_frame_budget(probe.frame_count, Fraction(params.target_fps) / input_fps(probe), self.limits)
        return probe, streams

    def _download(self, record: ObjectCreated, path: Path, limit: int) -> None:
        """Fetch the exact object version of the event (If-Match on its ETag) into `path`."""

        def within_limit(size: int) -> None:
            if size > limit:
                raise UploadTooLargeError(_too_large(size, limit))

        size = download(
            self.storage,
            record.bucket,
            record.key,
            path,
            version_id=record.version_id,
            etag=record.etag or None,
            streams=self.settings.download_streams,
            check_size=within_limit,
        )
        metrics.DOWNLOAD_BYTES.inc(size)


def with_container(output: OutputOptions, streams: list[dict[str, Any]], probe: MediaProbe) -> OutputOptions:
    """The resolved output options with the container that carries every stream of the source.

    Decided here, before any work, so a stream no container carries fails the job at once
    (`E_STREAM_UNSUPPORTED`) instead of at the final mux after all the GPU work.
    """
    plan = plan_streams(streams, video_codec=output.codec, rotation=probe.rotation)
    return output.model_copy(
        update={
            "container": plan.container,
            "container_reason": plan.reason,
            "container_losses": plan.losses,
        }
    )


def _too_large(size: int, limit: int) -> str:
    return f"the upload is {size} bytes; the limit is {limit} bytes ({limit / 1024**3:.2f} GiB)"


def object_record(
    *,
    bucket: str,
    key: str,
    etag: str,
    size: int,
    metadata: Mapping[str, str],
    version_id: str | None = None,
    created_at: datetime | None = None,
    event_name: str = "s3:ObjectCreated:Put",
) -> ObjectCreated:
    """An `ObjectCreated` for an object we learnt about without an event (API, sweeper)."""
    return ObjectCreated(
        event_name=event_name,
        event_time=created_at,
        bucket=bucket,
        key=key,
        size=size,
        etag=etag.strip('"'),
        version_id=version_id,
        content_type=None,
        user_metadata=dict(metadata),
        sequencer=None,
    )
