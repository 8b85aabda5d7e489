"""Reporting a failed job: the state in PostgreSQL and the `job.failed` event the notifier turns into a webhook."""

from __future__ import annotations

import errno
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from minio.error import MinioException
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common import jobs
from infiniteflow_common.db import transaction
from infiniteflow_common.deps import Publish
from infiniteflow_common.errors import HandedBack, InfiniteFlowError, TransientError
from infiniteflow_common.events import JobFailed
from infiniteflow_common.metrics import FFMPEG_FAILURES
from infiniteflow_common.observability import get_logger
from infiniteflow_common.storage import permanent_storage_failure
from infiniteflow_common.topics import Topic

log = get_logger()

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
ANNOUNCEMENT_CONSUMER = "notifier"  # the stage that turns `job.failed` into webhooks


class ScratchFullError(InfiniteFlowError):
    """The service's scratch disk filled up while working on the job (permanent for this attempt)."""

    code = "E_SCRATCH_FULL"

    @classmethod
    def during(cls, stage: str, exc: OSError) -> ScratchFullError:
        """The error for `stage`, from the OSError that reported the full disk."""
        return cls(f"the {stage} scratch disk is full ({exc.strerror}); free space or add disk, then retry")


def is_disk_full(exc: OSError) -> bool:
    """Whether an OSError says the disk (or the quota) is full."""
    return exc.errno in DISK_FULL


async def report_failure(
    sessions: async_sessionmaker[AsyncSession],
    publish: Publish,
    *,
    job_id: uuid.UUID,
    stage: str,
    code: str,
    message: str,
    chunk_index: int | None = None,
) -> None:
    """Fail the job (once) and announce it. Replays re-announce only if the job was not failed before.

    The notifier never re-announces: it consumes the announcements, so a record it gave up on (its job
    final long before) would come back to it as a fresh `job.failed`, and fail it again, for ever.
    """
    async with transaction(sessions) as session:
        changed = await jobs.fail(session, job_id, code, message)
        job = await jobs.get_job(session, job_id)
    if job is None:
        log.error("failure for unknown job", job_id=str(job_id), code=code)
        return
    if not changed and (job.error_code != code or stage == ANNOUNCEMENT_CONSUMER):
        log.info("job already final; failure not re-announced", job_id=str(job_id), status=job.status)
        return
    params = job.job_params
    await publish(
        Topic.JOB_FAILED,
        JobFailed(
            job_id=job_id,
            bucket=job.source_bucket,
            key=job.source_key,
            params=params,
            stage=stage,
            chunk_index=chunk_index,
            error_code=code,
            error_message=message,
            failed_at=datetime.now(UTC),
        ),
    )
    log.warning("job failed", job_id=str(job_id), stage=stage, code=code, error=message)


@asynccontextmanager
async def job_fails_on(
    sessions: async_sessionmaker[AsyncSession],
    publish: Publish,
    *,
    job_id: uuid.UUID,
    stage: str,
    chunk_index: int | None = None,
    cleanup: Callable[[uuid.UUID], Awaitable[None]] | None = None,
) -> AsyncIterator[None]:
    """A permanent error inside the block fails the job (announced) and ends the message's handling.

    Bad media, an impossible plan, a failed encode, a source deleted or replaced: retrying cannot
    help, and the record itself was fine, so the job fails with the error's code and the consumer
    commits and goes on. Everything else propagates to the consumer: a transient error
    (`classify.is_transient`) is retried until the consumer stops for a restart; an error nobody
    classified is retried a bounded number of times, then the record is dead-lettered and its job
    fails with `E_INTERNAL` (`kafka.ReliableConsumer`), so it cannot crash-loop the service.

    `cleanup(job_id)` then removes the job's work objects (a failed job keeps none); its own failure
    is logged, not raised: the object store's lifecycle rule is the backstop.
    """
    try:
        yield
    except (OSError, InfiniteFlowError, MinioException) as exc:
        failure = permanent_failure(exc, stage)
        if failure is None:
            raise
        if getattr(failure, "media_failure", False):
            FFMPEG_FAILURES.labels(stage, failure.code).inc()
        await report_failure(
            sessions,
            publish,
            job_id=job_id,
            stage=stage,
            code=failure.code,
            message=failure.message,
            chunk_index=chunk_index,
        )
        if cleanup is not None:
            try:
                await cleanup(job_id)
            except Exception as error:  # the lifecycle rule removes what this leaves
                log.warning("work objects of a failed job not removed", job_id=str(job_id), error=str(error))


def permanent_failure(exc: BaseException, stage: str) -> InfiniteFlowError | None:
    """The job failure `exc` stands for when no retry can fix it; None when it is worth retrying.

    A full scratch disk must not leave a half-written output behind or loop forever: the job fails
    with a code an operator can act on. An object that is gone, forbidden or replaced fails the job
    (`storage.permanent_storage_failure`); other object-store and OS errors are transient.
    """
    if isinstance(exc, OSError):
        return ScratchFullError.during(stage, exc) if is_disk_full(exc) else None
    if isinstance(exc, TransientError | HandedBack):
        return None
    if isinstance(exc, InfiniteFlowError):
        return exc
    return permanent_storage_failure(exc)
