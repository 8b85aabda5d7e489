"""What a finished chunk reports: its `chunk.interpolated` event, and its metrics and log line."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from infiniteflow_common.events import ChunkInterpolated, ChunkReady
from infiniteflow_common.observability import get_logger
from services.gpu_interp import metrics
from services.gpu_interp.chunk_work import ChunkOutcome
from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.engines.base import InterpolationEngine
from services.gpu_interp.engines.models import AUTO, check_choice
from services.gpu_interp.model_choice import ModelChoice

log = get_logger()


def result_key(job_id: uuid.UUID, index: int, epoch: int) -> str:
    """Object key of an encoded chunk; the epoch keeps a fenced worker from overwriting it."""
    return f"{job_id}/out/{index:05d}-e{epoch}.mkv"


def result_event(
    settings: WorkerSettings,
    chunk: ChunkReady,
    epoch: int,
    key: str,
    size: int,
    engine: InterpolationEngine,
    outcome: ChunkOutcome,
    seconds: float,
    started_at: datetime,
) -> ChunkInterpolated:
    """The chunk's `chunk.interpolated`: where its part is, under which epoch, and how it was made."""
    quality = outcome.quality
    chosen = model_of(chunk, outcome)
    return ChunkInterpolated(
        job_id=chunk.job_id,
        chunk_index=chunk.chunk_index,
        object_key=key,
        frames_out=outcome.frames_out,
        worker_id=settings.worker_id,
        lease_epoch=epoch,
        attempt=chunk.attempt,
        engine=chunk.engine,
        device=str(getattr(engine, "device", "cpu")),
        scale=outcome.scale or 1.0,
        interp_seconds=seconds,
        finished_at=datetime.now(UTC),
        quality_psnr_db=quality.psnr_db if quality else None,
        quality_ssim=quality.ssim if quality else None,
        quality_samples=quality.samples if quality else 0,
        # what checking the chunk cost: under `auto` the choice, whose winner's check is the self-check
        quality_seconds=outcome.check_seconds,
        batch_size=outcome.batch_size,
        oom_retries=outcome.oom_retries,
        encoded_bytes=size,
        started_at=started_at,
        model=chosen.model if chosen else None,
        model_scores=chosen.scores or None if chosen else None,
    )


def model_of(chunk: ChunkReady, outcome: ChunkOutcome) -> ModelChoice | None:
    """The RIFE model that did the chunk and how it was picked (None: the flow engine has none)."""
    if chunk.engine != "rife":
        return None
    return outcome.model_choice or ModelChoice(check_choice(chunk.model or AUTO), "job")


def check_budget(settings: WorkerSettings, outcome: ChunkOutcome) -> float:
    """The share of the chunk its checks may cost: auto's choice budget when it chose by a check
    (the self-check included), else the self-check's own."""
    choice = outcome.model_choice
    if choice is not None and choice.chosen_by == "check":
        return settings.model_choice_budget
    return settings.quality_budget


def observe(
    settings: WorkerSettings,
    memory_budget: int,
    chunk: ChunkReady,
    epoch: int,
    outcome: ChunkOutcome,
    seconds: float,
    size: int,
) -> None:
    """Count the finished chunk and log what it cost: time, memory against its estimate, checks."""
    quality = outcome.quality
    metrics.CHUNKS.labels("done").inc()
    chosen = model_of(chunk, outcome)
    if chosen is not None:
        metrics.MODEL_CHOICES.labels(chosen.model, chosen.chosen_by).inc()
        if len(chosen.scores) > 1:
            ranked = sorted(chosen.scores.values(), reverse=True)
            metrics.MODEL_CHOICE_MARGIN.observe(ranked[0] - ranked[1])
    metrics.CHUNK_SECONDS.labels(chunk.engine).observe(seconds)
    memory: dict[str, object] = {}
    if outcome.memory_estimate_bytes is not None:
        metrics.MEMORY_ESTIMATE.labels(chunk.engine).observe(outcome.memory_estimate_bytes)
        metrics.LAST_MEMORY_ESTIMATE.set(outcome.memory_estimate_bytes)
        memory["memory_estimate_bytes"] = outcome.memory_estimate_bytes
        memory["memory_budget_bytes"] = memory_budget
    if outcome.peak_rss_bytes is not None:
        metrics.PEAK_RSS.labels(chunk.engine).observe(outcome.peak_rss_bytes)
        metrics.LAST_PEAK_RSS.set(outcome.peak_rss_bytes)
        memory["peak_rss_bytes"] = outcome.peak_rss_bytes
        if outcome.peak_rss_bytes > memory_budget:
            log.warning(
                "chunk's measured peak memory went over the worker's budget; the estimate fell short",
                job_id=str(chunk.job_id), chunk_index=chunk.chunk_index, **memory,
            )  # fmt: skip
    metrics.FRAMES.labels(chunk.engine).inc(outcome.frames_out)
    check: dict[str, object] = {}
    if quality is not None:
        # the self-check's cost against the chunk's own work (decode, interpolation, encode)
        cost = quality.seconds / max(1e-9, seconds - quality.seconds)
        metrics.QUALITY_PSNR.labels(chunk.engine).observe(quality.psnr_db)
        metrics.QUALITY_COST.observe(cost)
        check = {
            "quality_psnr_db": round(quality.psnr_db, 2),
            "quality_ssim": round(quality.ssim, 4),
            "quality_frames": list(quality.frames),
            "quality_seconds": round(quality.seconds, 4),
            "quality_cost_ratio": round(cost, 4),
        }
    if chosen is not None:
        check["model"] = chosen.model
        check["model_chosen_by"] = chosen.chosen_by
        check["model_scores"] = {name: round(score, 2) for name, score in chosen.scores.items()}
        check["model_choice_seconds"] = round(chosen.seconds, 4)
    if outcome.check_seconds > 0:
        # choice and self-check together (the chosen model's check counted once) vs their budget
        share = outcome.check_seconds / max(1e-9, seconds)
        metrics.CHECK_SHARE.labels(chunk.engine).observe(share)
        check["check_seconds"] = round(outcome.check_seconds, 4)
        check["check_share"] = round(share, 4)
        check["check_budget"] = check_budget(settings, outcome)
    log.info(
        "chunk interpolated",
        job_id=str(chunk.job_id),
        chunk_index=chunk.chunk_index,
        epoch=epoch,
        frames_out=outcome.frames_out,
        encoded_bytes=size,
        seconds=round(seconds, 3),
        scale=outcome.scale,
        batch_size=outcome.batch_size,
        tile=outcome.tile,
        oom_retries=outcome.oom_retries,
        **memory,
        **check,
    )
