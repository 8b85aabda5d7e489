"""A job's resources: status, live events, download, the caller's job list, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from infiniteflow_common.chunks import check_costs
from infiniteflow_common.db import Job, transaction, utcnow
from infiniteflow_common.domain import FINAL_STATUSES, SUCCEEDED, JobStatus
from infiniteflow_common.events import JobCancelled
from infiniteflow_common.jobs import CancelResult, cancel, get_job, list_page
from infiniteflow_common.observability import get_logger
from infiniteflow_common.queue import queue_view, read_loads
from infiniteflow_common.reports import check_view
from services.ingest import metrics
from services.ingest.api.deps import ApiDeps, CurrentCaller, Deps
from services.ingest.api.errors import ApiError
from services.ingest.api.views import decode_cursor, encode_cursor, job_view
from services.ingest.auth import Caller
from services.ingest.job_events import SAFETY_REFRESH_S
from services.ingest.params import InvalidParams

log = get_logger()
SSE_PING_S = 10
JOBS_PAGE_MAX = 100

router = APIRouter()


@router.get("/api/status/{job_id}", summary="A job's status, progress, error and timings")
async def status(job_id: uuid.UUID, caller: CurrentCaller, deps: Deps) -> dict[str, Any]:
    """404 for an unknown job (or another tenant's), 422 for a malformed id."""
    job = await _job_or_404(deps, job_id, caller)
    async with deps.sessions() as session:
        costs = await check_costs(session, job.id)
    return job_view(job, (await _queue_views(deps, [job])).get(job.id), check_view(costs))


@router.get(
    "/api/download/{job_id}",
    status_code=307,
    summary="Redirect to the finished output",
    responses={409: {"description": "not completed (or failed)"}, 404: {"description": "unknown"}},
)
async def download(
    job_id: uuid.UUID,
    caller: CurrentCaller,
    deps: Deps,
    redirect: Annotated[
        bool, Query(description="false: answer 200 with the URL as JSON (for callers that send a key)")
    ] = True,
) -> Response:
    """A 307 to a presigned URL of the output; 409 while not completed, with the failure if failed.

    With `redirect=false` the answer is `{"url", "expires_in_s"}` instead: a browser page that sends
    its key in a header cannot follow a redirect as a plain link, but can open the presigned URL.
    """
    settings = deps.settings
    job = await _job_or_404(deps, job_id, caller)
    if job.status == JobStatus.CANCELLED.value:
        raise ApiError(409, "E_JOB_CANCELLED", "the job was cancelled, there is no output")
    if job.status == JobStatus.FAILED.value:
        raise ApiError(
            409,
            "E_JOB_FAILED",
            f"the job failed, there is no output: {job.error_code}: {job.error_message}",
            job_error={"code": job.error_code, "message": job.error_message},
        )
    if job.status not in SUCCEEDED or not job.output_key:
        raise ApiError(
            409,
            "E_JOB_NOT_READY",
            f"the job is {job.status} ({job.progress}%); try again when it is completed",
            status=job.status,
            progress=job.progress,
        )
    url = await asyncio.to_thread(
        deps.storage.presigned_get_object,
        job.output_bucket or settings.output_bucket,
        job.output_key,
        expires=timedelta(seconds=settings.presign_expiry_s),
    )
    if not redirect:
        return JSONResponse({"url": url, "expires_in_s": settings.presign_expiry_s})
    return RedirectResponse(url, status_code=307)


@router.get(
    "/api/events/{job_id}",
    summary="Server-sent events of a job's status and progress until it is final",
    response_class=EventSourceResponse,
    responses={404: {"description": "unknown job"}},
)
async def events(job_id: uuid.UUID, caller: CurrentCaller, deps: Deps) -> EventSourceResponse:
    """`event: status` with the `GET /api/status` body now and at every change; ends when final."""
    await _job_or_404(deps, job_id, caller)
    return EventSourceResponse(_job_stream(deps, job_id), ping=SSE_PING_S)


@router.get("/api/jobs", summary="The caller's recent jobs, newest first (paginated)")
async def list_jobs(
    caller: CurrentCaller,
    deps: Deps,
    limit: Annotated[int, Query(ge=1, le=JOBS_PAGE_MAX)] = 20,
    cursor: Annotated[str | None, Query(description="`next` of the previous page")] = None,
) -> dict[str, Any]:
    """`{"jobs": [...], "next": cursor | null}`: each job as `GET /api/status` shows it.

    A tenant sees its own jobs; an anonymous caller (local mode) the jobs without a tenant.
    """
    after = None
    if cursor:
        try:
            after = decode_cursor(cursor)
        except InvalidParams as exc:
            raise ApiError(422, exc.code, exc.message) from None
    async with deps.sessions() as session:
        jobs = await list_page(session, tenant_id=caller.tenant_id, after=after, limit=limit + 1)
    page = jobs[:limit]
    more = len(jobs) > limit
    queues = await _queue_views(deps, page)
    return {
        "jobs": [job_view(job, queues.get(job.id)) for job in page],
        "next": encode_cursor(page[-1].created_at, page[-1].id) if more and page else None,
    }


@router.post(
    "/api/jobs/{job_id}/cancel",
    summary="Cancel a job that has not finished",
    responses={
        404: {"description": "unknown job (or another tenant's)"},
        409: {"description": "the job already completed or failed"},
    },
)
async def cancel_job(job_id: uuid.UUID, caller: CurrentCaller, deps: Deps) -> dict[str, Any]:
    """Move the job to `cancelled` and announce it (job.cancelled webhook); 200 with the job.

    Idempotent: cancelling a cancelled job answers 200 again and announces it again (the notifier
    keeps one webhook per job and event type). 409 `E_JOB_FINAL` when it completed or failed first.
    """
    await _job_or_404(deps, job_id, caller)
    async with transaction(deps.sessions) as session:
        result = await cancel(session, job_id, now=utcnow())
        if result is not None and result.job.status == JobStatus.CANCELLED.value:
            # Staged with the cancel, so the webhook is announced if and only if the cancel commits.
            await deps.starter.outbox.stage(session, deps.cancelled_topic, _cancelled_event(result))
    if result is None:
        raise ApiError(404, "E_JOB_NOT_FOUND", f"no job {job_id}")
    job = result.job
    if job.status != JobStatus.CANCELLED.value:
        raise ApiError(
            409,
            "E_JOB_FINAL",
            f"the job is already {job.status}; only a job that has not finished can be cancelled",
            status=job.status,
        )
    if result.cancelled_now:
        metrics.JOBS_CANCELLED.inc()
        log.info("job cancelled", job_id=str(job.id), previous_status=result.previous_status)
    await deps.starter.outbox.relay_after_commit(job_id=str(job.id))
    return job_view(job)


def _cancelled_event(result: CancelResult) -> JobCancelled:
    """The `job.cancelled` announcement of a cancel (a repeat announces again: the notifier dedupes)."""
    job = result.job
    params = job.job_params
    return JobCancelled(
        job_id=job.id,
        tenant_id=job.tenant_id,
        bucket=job.source_bucket,
        key=job.source_key,
        webhook_url=params.webhook_url if params is not None else None,
        previous_status=result.previous_status if result.cancelled_now else None,
        progress=max(0, min(100, job.progress)),
        cancelled_at=job.cancelled_at or utcnow(),
    )


async def _job_stream(deps: ApiDeps, job_id: uuid.UUID) -> AsyncIterator[ServerSentEvent]:
    hub = deps.job_events
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with hub.subscribe(job_id) if hub is not None else _no_events(queue) as queue:
        sent: tuple[Any, ...] | None = None
        while True:
            async with deps.sessions() as session:
                job = await get_job(session, job_id)
            if job is None:
                return
            queued = (await _queue_views(deps, [job])).get(job.id)
            place = queued and (queued["position"], queued["estimated_start"][:16])  # to the minute
            state = (job.status, job.progress, job.chunks_done, job.chunks_total, place)
            if state != sent:
                sent = state
                view = job_view(job, queued)
                yield ServerSentEvent(json.dumps(view), event="status", id=str(job.progress))
            if job.status in FINAL_STATUSES:
                return
            # wait for the next notification; the timeout covers one lost while disconnected
            refresh_s = SAFETY_REFRESH_S if hub is not None and hub.connected.is_set() else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.get(), timeout=refresh_s)


@asynccontextmanager
async def _no_events(queue: asyncio.Queue[dict[str, Any]]) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    yield queue  # nothing ever arrives: the stream re-reads on its timeout


async def _queue_views(deps: ApiDeps, jobs: list[Job]) -> dict[uuid.UUID, dict[str, Any] | None]:
    """The `queue` object of each job still running, from one snapshot of the running jobs.

    Positions count every tenant's queued jobs (dispatch shares the fleet), but name none of them.
    """
    if all(job.status in FINAL_STATUSES for job in jobs):
        return {}
    async with deps.sessions() as session:
        snapshot = await read_loads(session, deps.settings.engine_mpix_per_s)
    places = snapshot.standings()
    return {job.id: queue_view(places.get(job.id), snapshot.at) for job in jobs}


async def _job_or_404(deps: ApiDeps, job_id: uuid.UUID, caller: Caller) -> Job:
    async with deps.sessions() as session:
        job = await get_job(session, job_id)
    # another tenant's job answers exactly like a missing one: ids must not leak across tenants
    if job is None or not caller.may_see(job.tenant_id):
        raise ApiError(404, "E_JOB_NOT_FOUND", f"no job {job_id}")
    return job
