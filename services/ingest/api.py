"""The HTTP API (FastAPI; OpenAPI at /docs): upload, status, live events, download, health, web page.

Paths are the ones users of the first version know. Every error body is
`{"error": {"code": "E_…", "message": "…"}}`. An upload is streamed to the incoming bucket under a key
our code chooses and started at once through the same `JobStarter` the bucket events use; the MinIO
event that upload causes names the same (bucket, key, etag), so it finds the job instead of making one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from minio import Minio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infiniteflow_common.chunks import check_costs
from infiniteflow_common.db import Job, ping, transaction, utcnow
from infiniteflow_common.domain import FINAL_STATUSES, SUCCEEDED, JobStatus
from infiniteflow_common.events import PRIORITY_MAX, PRIORITY_MIN, JobCancelled, JobParams
from infiniteflow_common.jobs import cancel, get_job, list_page
from infiniteflow_common.observability import get_logger
from infiniteflow_common.queue import queue_view, read_loads
from infiniteflow_common.reports import check_view, plan_view, stage_seconds
from infiniteflow_common.tenants import authenticate
from infiniteflow_common.topics import Topic
from services.ingest import metrics
from services.ingest.auth import Caller, count_request, presented_key
from services.ingest.config import IngestSettings
from services.ingest.job_events import SAFETY_REFRESH_S, JobEventHub
from services.ingest.keys import upload_key
from services.ingest.params import (
    InvalidParams,
    format_fps,
    normalise_keys,
    output_fps,
    output_metadata,
    parse_output_options,
    parse_params,
)
from services.ingest.start import JobStarter, Uploader, object_record, param_defaults

log = get_logger()

OPTION_FIELDS = (
    "multiplier", "target_fps", "engine", "quality", "model", "webhook_url", "priority", "codec", "crf",
    "bitrate", "preset", "dedupe",
)  # fmt: skip
FORM_OVERHEAD = 64 * 1024
"""Room for multipart headers and the option fields on top of the file size limit."""
HEALTH_TIMEOUT_S = 3.0
WEB_DIR = Path(__file__).resolve().parent / "web"
SSE_PING_S = 10
JOBS_PAGE_MAX = 100

HealthCheck = Callable[[], Awaitable[None]]


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message"}}` with an HTTP status."""

    def __init__(
        self, http_status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.http_status, self.code, self.message, self.extra = http_status, code, message, extra
        self.headers = headers


class _BodyTooLarge(Exception):  # noqa: N818 - internal signal, never leaves this module
    pass


@dataclass(frozen=True)
class ApiDeps:
    """What the API needs; the Runtime's lazy resources fit (nothing here connects on creation)."""

    settings: IngestSettings
    sessions: async_sessionmaker[AsyncSession]
    storage: Minio
    starter: JobStarter
    kafka_check: HealthCheck
    # Pushes job changes to /api/events streams; without it a stream re-reads its job every few seconds.
    job_events: JobEventHub | None = None
    # Where a cancel is announced (the notifier's job.cancelled webhook); tests use a private topic.
    cancelled_topic: str = Topic.JOB_CANCELLED.value


def kafka_admin_check(bootstrap: str) -> HealthCheck:
    """A health check that lists the cluster's topics through a (reused) admin client."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000})

    async def check() -> None:
        await asyncio.to_thread(admin.list_topics, timeout=HEALTH_TIMEOUT_S)

    return check


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one error shape of the API."""
    return {"error": {"code": code, "message": message, **extra}}


_STATUS_CODES = {
    400: "E_REQUEST_INVALID",
    401: "E_AUTH_REQUIRED",
    404: "E_NOT_FOUND",
    405: "E_METHOD_NOT_ALLOWED",
    409: "E_CONFLICT",
    413: "E_UPLOAD_TOO_LARGE",
    422: "E_REQUEST_INVALID",
}


class RequestMetrics:
    """Counts requests by route template and status (ASGI middleware; raw paths would be unbounded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            metrics.API_REQUESTS.labels(getattr(route, "path", "unmatched"), str(status)).inc()


def job_view(
    job: Job, queue: dict[str, Any] | None = None, checks: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A job as `GET /api/status` shows it (pure); `queue` is its place while queued (`queue_view`),
    `checks` what checking its finished chunks cost against the budget (`check_view`)."""
    params = job.job_params
    probe = job.probe
    out_fps = job.result.out_fps if job.result else None
    if out_fps is None and params is not None and probe is not None:
        out_fps = format_fps(output_fps(params, probe))
    return {
        "job_id": str(job.id),
        "status": job.status,
        "progress": max(0, min(100, job.progress)),
        "priority": job.priority,
        "source": {"type": job.source, "bucket": job.source_bucket, "key": job.source_key},
        "chunks": {"done": job.chunks_done, "total": job.chunks_total},
        "error": (
            {"code": job.error_code, "message": job.error_message or ""}
            if job.status == JobStatus.FAILED.value or job.error_code
            else None
        ),
        "params": job.params.model_dump(mode="json"),
        "output_options": job.output_options.model_dump(mode="json") if job.output_options else None,
        "probe": (
            {
                "width": probe.width,
                "height": probe.height,
                "fps": format_fps(Fraction(probe.fps_num, probe.fps_den)),
                "frame_count": probe.frame_count,
                "duration_s": probe.duration_s,
                "pix_fmt": probe.pix_fmt,
                "bit_depth": probe.bit_depth,
                "is_vfr": probe.is_vfr,
                "rotation": probe.rotation,
                "has_audio": probe.has_audio,
            }
            if probe is not None
            else None
        ),
        "output_fps": out_fps,
        # the output container (mp4, mov or mkv), decided at ingest from the source's streams
        "output_container": (job.result.container if job.result else None)
        or (job.output_options.container if job.output_options else None),
        # the split: output rate and frame count, scene cuts, and whether VFR input was made constant
        "plan": plan_view(job.plan),
        "result": job.result.model_dump(mode="json") if job.result else None,
        "quality": _quality_view(job),
        # input/output rates, frame counts and durations, audio drift, scene cuts, VFR (when completed)
        "timing": job.result.timing if job.result else None,
        "timings": {
            "created_at": _iso(job.created_at),
            "updated_at": _iso(job.updated_at),
            "split_at": _iso(job.split_at),
            "completed_at": _iso(job.completed_at),
            **stage_seconds(job),
            # model choice (auto) and quality self-check of the finished chunks vs their budget
            "checks": checks,
        },
        "download_url": f"/api/download/{job.id}" if job.status in SUCCEEDED else None,
        "cancel_url": None if job.status in FINAL_STATUSES else f"/api/jobs/{job.id}/cancel",
        "cancelled_at": _iso(job.cancelled_at),
        # while no chunk has started: position, jobs_ahead, estimated_wait_s, estimated_start
        "queue": queue,
    }


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    """The opaque `next` cursor of `GET /api/jobs`: the last job's (created_at, id), URL-safe."""
    raw = f"{created_at.astimezone(UTC).isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor names; `InvalidParams` (E_CURSOR_INVALID) when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, job_id = raw.partition("|")
        created_at = datetime.fromisoformat(moment)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, uuid.UUID(job_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidParams(
            "the cursor is not one this API gave out; start again without one", code="E_CURSOR_INVALID"
        ) from None


def _quality_view(job: Job) -> dict[str, Any] | None:
    """The quality self-check summary: the job's mean score, its worst chunk, the chunks below the floor."""
    if job.quality_psnr_db is None:
        return None
    quality = job.result.quality if job.result else None
    return {
        "psnr_db": job.quality_psnr_db,
        "ssim": job.quality_ssim,
        "worst_chunk": {"index": job.quality_worst_chunk, "psnr_db": job.quality_worst_psnr_db},
        "psnr_floor_db": quality.psnr_floor_db if quality else None,
        "chunks_below_floor": job.quality_low_chunks or [],
    }


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


async def current_caller(request: Request) -> Caller:
    """Authenticate the request's key (if any) and count it against its tenant's rate limit."""
    deps: ApiDeps = request.app.state.deps
    settings = deps.settings
    secret = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    challenge = {"WWW-Authenticate": 'Bearer realm="infiniteflow"'}
    async with transaction(deps.sessions) as session:
        if secret is None:
            if settings.api_auth_required:
                raise ApiError(
                    401,
                    "E_AUTH_REQUIRED",
                    "send your API key as 'Authorization: Bearer <key>' (or the X-API-Key header)",
                    headers=challenge,
                )
            # local mode: anonymous callers share the jobs that have no tenant, unmetered
            return Caller(tenant=None)
        tenant = await authenticate(session, secret)
        if tenant is None:
            raise ApiError(401, "E_AUTH_INVALID", "the API key is unknown or revoked", headers=challenge)
        limit = tenant.rate_limit_per_minute or settings.api_rate_limit_per_minute
        decision = await count_request(session, tenant.id, limit, utcnow())
    if not decision.allowed:
        metrics.RATE_LIMITED.inc()
        raise ApiError(
            429,
            "E_RATE_LIMITED",
            f"over the limit of {limit} requests per minute; retry in {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
            retry_after_s=decision.retry_after_s,
        )
    return Caller(tenant=tenant)


def create_api(deps: ApiDeps) -> FastAPI:
    """The ingest HTTP API over `deps` (works with uvicorn or an httpx `ASGITransport`)."""
    settings = deps.settings
    defaults = param_defaults(settings)
    app = FastAPI(
        title="InfiniteFlow",
        summary="Raise the frame rate of videos: upload, follow the job, download the result.",
        version="1.0.0",
    )
    app.state.deps = deps
    app.add_middleware(RequestMetrics)
    if settings.cors_allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Last-Event-ID"],
            expose_headers=["Retry-After", "Location"],
            max_age=600,
        )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, **exc.extra), status_code=exc.http_status, headers=exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "E_HTTP")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return JSONResponse(error_body("E_REQUEST_INVALID", details or "invalid request"), status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("api request failed", path=request.url.path, error=repr(exc))
        return JSONResponse(error_body("E_INTERNAL", "internal error; try again later"), status_code=500)

    @app.post(
        "/api/upload",
        status_code=202,
        summary="Upload a video and start a job",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                # The web page builds its form from these (order, enums, defaults,
                                # descriptions): an option added here appears there by itself.
                                "multiplier": {
                                    "type": "integer",
                                    "enum": [2, 4, 8],
                                    "default": defaults.multiplier,
                                    "description": "multiply the frame rate (or give target_fps)",
                                },
                                "target_fps": {
                                    "type": "string",
                                    "example": "60000/1001",
                                    "description": "output frame rate instead of a multiplier",
                                },
                                "engine": {
                                    "type": "string",
                                    "enum": list(settings.allowed_engines),
                                    "default": defaults.engine,
                                    "description": "rife: learned (best on a GPU); flow: classical (CPU)",
                                },
                                "quality": {
                                    "type": "string",
                                    "enum": list(settings.allowed_qualities),
                                    "default": defaults.quality,
                                    "description": "fast: one pass; tta and best: more passes, slower",
                                },
                                "model": {
                                    "type": "string",
                                    "enum": list(settings.allowed_models),
                                    "default": defaults.model,
                                    "description": "rife weights: auto picks per chunk; hdv3 or v4.25 for every chunk",
                                },
                                "webhook_url": {
                                    "type": "string",
                                    "format": "uri",
                                    "description": "receives the signed job.completed/failed/cancelled webhook",
                                },
                                "priority": {
                                    "type": "integer",
                                    "minimum": PRIORITY_MIN,
                                    "maximum": PRIORITY_MAX,
                                    "default": 0,
                                    "description": "higher goes first among your own jobs (-50 to 50)",
                                },
                                "codec": {
                                    "type": "string",
                                    "enum": ["h264", "h265", "av1", "source"],
                                    "default": "h264",
                                    "description": "output video codec (source: the input's codec)",
                                },
                                "crf": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "maximum": 63,
                                    "description": "constant quality (lower is better); or give bitrate",
                                },
                                "bitrate": {
                                    "type": "string",
                                    "example": "8M",
                                    "description": "target bitrate such as 8M or 2500k, instead of crf",
                                },
                                "preset": {
                                    "type": "string",
                                    "example": "medium",
                                    "description": "encoder speed preset (medium, slow, … or 0–13 for AV1)",
                                },
                                "dedupe": {
                                    "type": "boolean",
                                    "default": False,
                                    "description": "skip repeated source frames, interpolate the real motion",
                                },
                            },
                        }
                    }
                },
            }
        },
        responses={
            413: {"description": "over the size limit"},
            422: {"description": "bad options or form"},
        },
    )
    async def upload(request: Request, caller: Annotated[Caller, Depends(current_caller)]) -> JSONResponse:
        """Stream the file to the incoming bucket and start its job; 202 with the job's URLs."""
        limit = settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
            raise ApiError(413, "E_UPLOAD_TOO_LARGE", _too_large(limit))
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await request.receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit + FORM_OVERHEAD:
                    raise _BodyTooLarge
            return message

        try:
            form = await Request(request.scope, limited_receive).form(max_files=1, max_fields=16)
        except _BodyTooLarge:
            metrics.UPLOAD_BYTES.inc(received)
            raise ApiError(413, "E_UPLOAD_TOO_LARGE", _too_large(limit)) from None
        except (MultiPartException, AssertionError, KeyError) as exc:
            raise ApiError(
                422, "E_REQUEST_INVALID", f"send multipart/form-data with a 'file' ({exc})"
            ) from None
        try:
            metrics.UPLOAD_BYTES.inc(received)
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise ApiError(422, "E_REQUEST_INVALID", "send the video as the multipart field 'file'")
            size = file.size or 0
            if size > limit:
                raise ApiError(413, "E_UPLOAD_TOO_LARGE", _too_large(limit))
            options = {name: value for name in OPTION_FIELDS if isinstance(value := form.get(name), str)}
            try:
                params = parse_params(options, defaults)
                output = parse_output_options(options, defaults)
            except InvalidParams as exc:
                raise ApiError(422, exc.code, exc.message) from None
            metadata = _params_metadata(params) | output_metadata(output)
            key = (caller.tenant.bucket_prefix if caller.tenant else "") + upload_key(file.filename)
            file.file.seek(0)
            written = await asyncio.to_thread(
                deps.storage.put_object,
                settings.incoming_bucket,
                key,
                file.file,
                size,
                content_type=file.content_type or "application/octet-stream",
                metadata=metadata,  # type: ignore[arg-type]
            )
        finally:
            await form.close()
        record = object_record(
            bucket=settings.incoming_bucket,
            key=key,
            etag=str(written.etag),
            size=size,
            metadata=metadata,
            version_id=written.version_id,
            created_at=datetime.now(UTC),
        )
        job, _created = await deps.starter.create(record, source="api", uploader=Uploader(caller.tenant_id))
        status = job.status
        try:
            status = (await deps.starter.process(job.id, record, source="api")).status
        except Exception as exc:
            # The row exists; the upload's own MinIO event (or the sweeper) finishes the start.
            log.warning("api start deferred to the bucket event", job_id=str(job.id), error=repr(exc))
        return JSONResponse(
            {
                "job_id": str(job.id),
                "status": status,
                "key": key,
                "status_url": f"/api/status/{job.id}",
                "download_url": f"/api/download/{job.id}",
            },
            status_code=202,
        )

    @app.get("/api/status/{job_id}", summary="A job's status, progress, error and timings")
    async def status(job_id: uuid.UUID, caller: Annotated[Caller, Depends(current_caller)]) -> dict[str, Any]:
        """404 for an unknown job (or another tenant's), 422 for a malformed id."""
        job = await _job_or_404(job_id, caller)
        async with deps.sessions() as session:
            costs = await check_costs(session, job.id)
        return job_view(job, (await _queue_views([job])).get(job.id), check_view(costs))

    @app.get(
        "/api/download/{job_id}",
        status_code=307,
        summary="Redirect to the finished output",
        responses={409: {"description": "not completed (or failed)"}, 404: {"description": "unknown"}},
    )
    async def download(
        job_id: uuid.UUID,
        caller: Annotated[Caller, Depends(current_caller)],
        redirect: Annotated[
            bool, Query(description="false: answer 200 with the URL as JSON (for callers that send a key)")
        ] = True,
    ) -> Response:
        """A 307 to a presigned URL of the output; 409 while not completed, with the failure if failed.

        With `redirect=false` the answer is `{"url", "expires_in_s"}` instead: a browser page that sends
        its key in a header cannot follow a redirect as a plain link, but can open the presigned URL.
        """
        job = await _job_or_404(job_id, caller)
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

    @app.get(
        "/api/events/{job_id}",
        summary="Server-sent events of a job's status and progress until it is final",
        response_class=EventSourceResponse,
        responses={404: {"description": "unknown job"}},
    )
    async def events(
        job_id: uuid.UUID, caller: Annotated[Caller, Depends(current_caller)]
    ) -> EventSourceResponse:
        """`event: status` with the `GET /api/status` body now and at every change; ends when final."""
        await _job_or_404(job_id, caller)
        return EventSourceResponse(_job_stream(job_id), ping=SSE_PING_S)

    async def _job_stream(job_id: uuid.UUID) -> AsyncIterator[ServerSentEvent]:
        hub = deps.job_events
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        async with hub.subscribe(job_id) if hub is not None else _no_events(queue) as queue:
            sent: tuple[Any, ...] | None = None
            while True:
                async with deps.sessions() as session:
                    job = await get_job(session, job_id)
                if job is None:
                    return
                queued = (await _queue_views([job])).get(job.id)
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

    @app.get("/api/jobs", summary="The caller's recent jobs, newest first (paginated)")
    async def list_jobs(
        caller: Annotated[Caller, Depends(current_caller)],
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
        queues = await _queue_views(page)
        return {
            "jobs": [job_view(job, queues.get(job.id)) for job in page],
            "next": encode_cursor(page[-1].created_at, page[-1].id) if more and page else None,
        }

    @app.post(
        "/api/jobs/{job_id}/cancel",
        summary="Cancel a job that has not finished",
        responses={
            404: {"description": "unknown job (or another tenant's)"},
            409: {"description": "the job already completed or failed"},
            503: {"description": "cancelled, but the webhook could not be queued yet: send it again"},
        },
    )
    async def cancel_job(
        job_id: uuid.UUID, caller: Annotated[Caller, Depends(current_caller)]
    ) -> dict[str, Any]:
        """Move the job to `cancelled` and announce it (job.cancelled webhook); 200 with the job.

        Idempotent: cancelling a cancelled job answers 200 again and announces it again (the notifier
        keeps one webhook per job and event type). 409 `E_JOB_FINAL` when it completed or failed first.
        """
        await _job_or_404(job_id, caller)
        async with transaction(deps.sessions) as session:
            result = await cancel(session, job_id, now=utcnow())
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
        params = job.job_params
        event = JobCancelled(
            job_id=job.id,
            tenant_id=job.tenant_id,
            bucket=job.source_bucket,
            key=job.source_key,
            webhook_url=params.webhook_url if params is not None else None,
            previous_status=result.previous_status if result.cancelled_now else None,
            progress=max(0, min(100, job.progress)),
            cancelled_at=job.cancelled_at or utcnow(),
        )
        try:
            await deps.starter.publish(deps.cancelled_topic, event)
        except Exception as exc:
            log.error("job.cancelled not published", job_id=str(job.id), error=repr(exc))
            raise ApiError(
                503,
                "E_CANCEL_NOT_ANNOUNCED",
                "the job is cancelled, but its webhook could not be queued yet; send the cancel again",
            ) from exc
        return job_view(job)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        """The web page: upload, live progress, download, before/after."""
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

    @app.get("/health", summary="Kafka, MinIO and PostgreSQL reachability")
    async def health() -> JSONResponse:
        """200 when every component answers, else 503; each component's status either way."""
        checks: dict[str, Callable[[], Awaitable[Any]]] = {
            "kafka": deps.kafka_check,
            "minio": lambda: asyncio.to_thread(deps.storage.bucket_exists, settings.incoming_bucket),
            "postgres": lambda: ping(deps.sessions),
        }
        results = await asyncio.gather(*(_check(name, fn) for name, fn in checks.items()))
        components = dict(zip(checks, results, strict=True))
        healthy = all(c["status"] == "ok" for c in components.values())
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", "components": components},
            status_code=200 if healthy else 503,
        )

    async def _queue_views(jobs: list[Job]) -> dict[uuid.UUID, dict[str, Any] | None]:
        """The `queue` object of each job still running, from one snapshot of the running jobs.

        Positions count every tenant's queued jobs (dispatch shares the fleet), but name none of them.
        """
        if all(job.status in FINAL_STATUSES for job in jobs):
            return {}
        async with deps.sessions() as session:
            snapshot = await read_loads(session, settings.engine_mpix_per_s)
        places = snapshot.standings()
        return {job.id: queue_view(places.get(job.id), snapshot.at) for job in jobs}

    async def _job_or_404(job_id: uuid.UUID, caller: Caller) -> Job:
        async with deps.sessions() as session:
            job = await get_job(session, job_id)
        # another tenant's job answers exactly like a missing one: ids must not leak across tenants
        if job is None or not caller.may_see(job.tenant_id):
            raise ApiError(404, "E_JOB_NOT_FOUND", f"no job {job_id}")
        return job

    return app


@asynccontextmanager
async def _no_events(queue: asyncio.Queue[dict[str, Any]]) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    yield queue  # nothing ever arrives: the stream re-reads on its timeout


async def _check(name: str, fn: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        result = await asyncio.wait_for(fn(), timeout=HEALTH_TIMEOUT_S)
    except TimeoutError:
        return {"status": "down", "error": f"no answer within {HEALTH_TIMEOUT_S:g} s"}
    except Exception as exc:
        # Anyone may call /health: the exception's text (addresses, user names, paths) goes to the log.
        log.warning("health check failed", component=name, error=repr(exc))
        return {"status": "down", "error": "unreachable (see the ingest log)"}
    if result is False:  # bucket_exists: reachable, but the bucket is missing
        return {"status": "down", "error": "the incoming bucket does not exist"}
    return {"status": "ok", "latency_ms": round((loop.time() - started) * 1000, 1)}


def _params_metadata(params: JobParams) -> dict[str, str]:
    """The effective options as object user metadata, so the bucket event derives the same params."""
    options = {
        "multiplier": str(params.multiplier) if params.multiplier is not None else None,
        "target-fps": params.target_fps,
        "engine": params.engine,
        "quality": params.quality,
        "model": params.model,
        "webhook-url": params.webhook_url,
        "priority": str(params.priority),
    }
    return normalise_keys(options)


def _too_large(limit: int) -> str:
    return f"the upload is over the limit of {limit} bytes; send a smaller file"
