"""The job domain beside its events: the lives of jobs and chunks (statuses), the request that did not
parse as `JobParams`, and the result of a completed job.

Pure models (no SQL): the ORM module types its JSONB columns with them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infiniteflow_common.events import QualityReport


class JobStatus(StrEnum):
    """Life of a job; `completed`, `completed_with_warnings`, `failed` and `cancelled` are final.

    `completed_with_warnings` is a completed job (its output is there) whose quality self-check found
    chunks below the configured floor; the job names them.
    """

    PENDING = "pending"
    SPLITTING = "splitting"
    INTERPOLATING = "interpolating"
    MUXING = "muxing"
    COMPLETED = "completed"
    COMPLETED_WITH_WARNINGS = "completed_with_warnings"
    FAILED = "failed"
    # A user stopped it (POST /api/jobs/{id}/cancel); it never completes or fails afterwards.
    CANCELLED = "cancelled"


SUCCEEDED = frozenset({JobStatus.COMPLETED.value, JobStatus.COMPLETED_WITH_WARNINGS.value})
"""Final statuses whose job has an output."""
FINAL_STATUSES = SUCCEEDED | {JobStatus.FAILED.value, JobStatus.CANCELLED.value}
"""Statuses a job never leaves."""


class ChunkStatus(StrEnum):
    """Life of a chunk; a claim carries a lease epoch that fences late results of evicted workers."""

    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"


class RequestedParams(BaseModel):
    """The metadata a user sent when it did not parse as `JobParams` (a job rejected at ingest).

    Kept on the row so the job's status shows what was asked for; nothing downstream reads it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    requested: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, data: Any) -> Any:
        # Rows inserted without parameters hold `{}`: nothing was requested.
        return data if data else {"requested": {}}


class OutputVideo(BaseModel):
    """How the output's video was encoded (the split's `VideoEncoding`; None: not recorded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    encoder: str | None = None
    crf: int | None = None
    bitrate: int | None = None
    preset: str | None = None


class InputTimingView(BaseModel):
    """The source as the split read it: its rate (`num/den`), frames, seconds, and whether VFR was made constant."""

    model_config = ConfigDict(frozen=True)

    fps: str
    frame_count: int
    duration_s: float
    vfr: bool
    vfr_converted: bool


class OutputTimingView(BaseModel):
    """The output as measured after the mux: its rate (`num/den`), frames and seconds."""

    model_config = ConfigDict(frozen=True)

    fps: str
    frame_count: int
    duration_s: float


class AudioTimingView(BaseModel):
    """The output's audio: its seconds and how far its end lies from the video's, in seconds and frames."""

    model_config = ConfigDict(frozen=True)

    duration_s: float
    drift_s: float | None
    drift_frames: float | None


class SceneCutView(BaseModel):
    """One scene cut: the output frame it starts at, and when."""

    model_config = ConfigDict(frozen=True)

    frame: int
    time_s: float


class TimingView(BaseModel):
    """A finished job's `timing` block, the same in the webhook and the status API (`reports.timing_view`)."""

    model_config = ConfigDict(frozen=True)

    input: InputTimingView
    output: OutputTimingView
    audio: AudioTimingView | None
    scene_cuts: tuple[SceneCutView, ...]


class JobResult(BaseModel):
    """What a completed job produced, as the status API shows it (`jobs.result`).

    Built from the job's `JobCompleted` event (`services.muxer.report.job_result`), plus what the event
    does not carry: the plan's cuts, container and encoding, the output's streams, stage seconds.
    Fields after `mux_seconds` were added over time; rows stored before them read with the defaults.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    output_bucket: str
    output_key: str
    output_size_bytes: int
    in_fps: str
    out_fps: str
    in_frames: int
    out_frames: int
    duration_s: float
    scene_starts: tuple[int, ...]
    vfr_converted: bool
    mux_seconds: float
    # mp4, mov or mkv, why (ingest's choice for the source's streams) and what the container drops
    container: str | None = None
    container_reason: str | None = None
    container_losses: tuple[str, ...] = ()
    # the output's audio and subtitle streams as ffprobe reads them back
    tracks: tuple[dict[str, Any], ...] = ()
    video: OutputVideo | None = None
    quality: QualityReport | None = None
    # the status API's `timing` block (`reports.timing_view`): rates, frames, durations, drift, cuts
    timing: TimingView | None = None
    # first chunk started → last chunk finished (None: not known)
    interpolate_s: float | None = None
