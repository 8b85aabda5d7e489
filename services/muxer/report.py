"""What a finished job reports about itself: the quality summary and the timing report (pure logic).

The quality summary aggregates the chunks' self-check scores: the job's score is the mean of the
checked chunks, its worst chunk is the lowest PSNR, and every checked chunk below the configured floor
is named, which makes the job `completed_with_warnings`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from infiniteflow_common.db import JobStatus
from infiniteflow_common.events import QualityReport


@dataclass(frozen=True)
class ChunkScore:
    """One chunk's self-check score (None: the chunk was not checked)."""

    index: int
    psnr_db: float | None
    ssim: float | None


def quality_report(scores: Iterable[ChunkScore], floor_db: float) -> QualityReport | None:
    """The job's quality summary, or None when no chunk was checked."""
    checked = [(s.index, s.psnr_db, s.ssim) for s in scores if s.psnr_db is not None]
    if not checked:
        return None
    ssims = [ssim for _, _, ssim in checked if ssim is not None]
    worst_index, worst_psnr, _ = min(checked, key=lambda c: (c[1], c[0]))
    return QualityReport(
        psnr_db=sum(psnr for _, psnr, _ in checked) / len(checked),
        ssim=sum(ssims) / len(ssims) if ssims else None,
        chunks_checked=len(checked),
        worst_chunk_index=worst_index,
        worst_chunk_psnr_db=worst_psnr,
        psnr_floor_db=floor_db,
        chunks_below_floor=tuple(sorted(index for index, psnr, _ in checked if psnr < floor_db)),
    )


def final_status(quality: QualityReport | None) -> JobStatus:
    """`completed_with_warnings` when a checked chunk is below the floor, else `completed`."""
    if quality is not None and quality.chunks_below_floor:
        return JobStatus.COMPLETED_WITH_WARNINGS
    return JobStatus.COMPLETED
