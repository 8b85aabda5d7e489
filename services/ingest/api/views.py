"""How the API shows a job (pure): the `GET /api/status` body, and the `GET /api/jobs` page cursor."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from infiniteflow_common.db import Job
from infiniteflow_common.domain import FINAL_STATUSES, SUCCEEDED, JobStatus
from infiniteflow_common.reports import plan_view, stage_seconds
from services.ingest.params import InvalidParams, format_fps, output_fps


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
        # the plan: output rate and frame count, scene cuts, and whether VFR input was made constant
        "plan": plan_view(job.plan),
        "result": job.result.model_dump(mode="json") if job.result else None,
        "quality": _quality_view(job),
        # input/output rates, frame counts and durations, audio drift, scene cuts, VFR (when completed)
        "timing": job.result.timing.model_dump(mode="json") if job.result and job.result.timing else None,
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
