"""A job's progress bar (0–100): the point each stage reaches, in one place for the services that set it.

Progress only ever grows (`jobs.advance`, `jobs.set_progress`), so a replayed event never moves the bar
back. Interpolation, the long stage, fills the span between the split and the assembly chunk by chunk.
"""

from __future__ import annotations

from enum import IntEnum


class JobProgress(IntEnum):
    """Where the bar stands when a stage is reached."""

    STARTED = 2  # ingest: probed, its video.uploaded out
    SPLITTING = 5  # the splitter's pass began
    SPLIT = 15  # every chunk planned
    INTERPOLATED = 90  # every chunk done; the muxer assembles
    DONE = 100


def chunks_progress(done: int, total: int) -> int:
    """The bar when `done` of `total` chunks are interpolated: the span from SPLIT to INTERPOLATED."""
    span = JobProgress.INTERPOLATED - JobProgress.SPLIT
    return JobProgress.SPLIT + span * min(done, total) // max(1, total)
