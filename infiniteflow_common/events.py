"""Typed events: one frozen pydantic model per Avro record in `schemas/avro`, newest version.

Services build and read events through these models rather than raw dicts, so a missing field or a
naive timestamp fails where it is made. The models mirror the newest schema version field for field
(names and nullability); `tests/contract` enforces that, so a new schema version and its model change
together. Datetimes are timezone-aware UTC, truncated to the millisecond the wire keeps, so a model
round-trips through Avro unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.errors import InvalidMessage


def _utc_millis(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


UtcMillis = Annotated[datetime, AfterValidator(_utc_millis)]
"""An aware datetime, normalised to UTC at millisecond precision (Avro timestamp-millis)."""
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Long = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
LongCount = Annotated[int, Field(ge=0, le=2**63 - 1)]
Positive = Annotated[int, Field(ge=1, le=2**31 - 1)]
PRIORITY_MIN, PRIORITY_MAX = -50, 50
"""The range of a job's priority (JobParams v3, the `jobs.priority` column's check constraint)."""
Priority = Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)]
FrameRate = Annotated[str, Field(pattern=r"^[1-9][0-9]*(/[1-9][0-9]*)?$")]
"""An exact frame rate: an integer ('60') or a rational ('60000/1001')."""

UploadSource = Literal["bucket", "api", "sweeper"]
"""Avro enum `UploadSource`: a bucket notification, the HTTP API, or the sweeper."""


class AvroModel(BaseModel):
    """A model that mirrors one Avro record (top-level or nested)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    RECORD: ClassVar[str]
    """The Avro record's short name in namespace `dev.infiniteflow.events`."""

    def to_avro(self) -> dict[str, Any]:
        """The datum fastavro writes: every field, nested records as dicts."""
        return self.model_dump(mode="python")

    @classmethod
    def from_avro(cls, datum: dict[str, Any]) -> Self:
        """Build from a datum read with the newest reader schema."""
        return cls.model_validate(datum)


class Event(AvroModel):
    """A top-level record: carried on a topic, keyed by `job_id` (the DLQ envelope excepted)."""


class JobParams(AvroModel):
    RECORD: ClassVar[str] = "JobParams"

    multiplier: Literal[2, 4, 8] | None
    target_fps: FrameRate | None
    engine: str
    quality: str
    webhook_url: str | None
    # 'hdv3' | 'v4.25' | 'auto' (ingest checks the name; the worker picks per chunk for 'auto')
    model: str = "auto"
    # Among the tenant's own jobs, higher goes first (fair dispatch); released messages read as 0.
    priority: Priority = 0

    @model_validator(mode="after")
    def _one_rate(self) -> Self:
        if (self.multiplier is None) == (self.target_fps is None):
            raise ValueError("set exactly one of multiplier and target_fps")
        return self


class MediaProbe(AvroModel):
    RECORD: ClassVar[str] = "MediaProbe"

    format_name: str
    video_codec: str
    width: Positive
    height: Positive
    pix_fmt: str
    bit_depth: Positive
    fps_num: Positive
    fps_den: Positive
    avg_fps_num: Count
    avg_fps_den: Count
    frame_count: LongCount
    duration_s: float
    start_time_s: float = 0.0
    is_vfr: bool
    rotation: Int32
    color_range: str | None
    color_space: str | None
    color_transfer: str | None
    color_primaries: str | None
    has_audio: bool
    audio_streams: Count
    subtitle_streams: Count
    # every video packet timestamped, distinct and evenly spaced (None: not known, VideoUploaded < v4)
    packets_constant_rate: bool | None = None


class OutputSlot(AvroModel):
    """The wire form of an output slot (`timing.Slot`): Avro has no rationals, so `t` is a float.

    Code works on `timing.Slot`, whose `t` is exact; `Slot.to_wire` and `Slot.from_wire` convert here.
    """

    RECORD: ClassVar[str] = "OutputSlot"

    source_offset: Count
    t: float = Field(ge=0.0, lt=1.0)


class VideoEncoding(AvroModel):
    RECORD: ClassVar[str] = "VideoEncoding"

    encoder: str
    pix_fmt: str
    crf: Int32 | None = None
    bitrate: LongCount | None = None
    preset: str | None = None
    color_range: str | None = None
    color_space: str | None = None
    color_transfer: str | None = None
    color_primaries: str | None = None
    mastering_display: tuple[str, ...] | None = None
    max_cll: Count | None = None
    max_fall: Count | None = None


class SourceRange(AvroModel):
    RECORD: ClassVar[str] = "SourceRange"

    bucket: str
    key: str
    version_id: str | None
    etag: str
    size_bytes: LongCount
    time_base_num: Positive
    time_base_den: Positive
    frame_pts: tuple[Long, ...] | None
    frame_indices: tuple[LongCount, ...]
    # Where a decode must begin for the first frame to come out whole (ChunkReady v3); None: from the start.
    decode_start_pts: Long | None = None


class VideoUploaded(Event):
    RECORD: ClassVar[str] = "VideoUploaded"

    job_id: UUID
    source: UploadSource
    bucket: str
    key: str
    etag: str
    version_id: str | None
    size_bytes: LongCount
    params: JobParams
    probe: MediaProbe
    uploaded_at: UtcMillis


class JobSplit(Event):
    RECORD: ClassVar[str] = "JobSplit"

    job_id: UUID
    chunk_count: Positive
    source_frame_count: LongCount
    in_fps_num: Positive
    in_fps_den: Positive
    out_fps_num: Positive
    out_fps_den: Positive
    out_frame_count: LongCount
    scene_cuts: tuple[LongCount, ...]
    vfr_converted: bool
    split_at: UtcMillis
    planned_frame_count: LongCount = 0
    duplicates_skipped: LongCount = 0
    vfr_kept: bool = False
    vfr_time_base_num: Count = 0
    vfr_time_base_den: Positive = 1
    vfr_pts: tuple[Long, ...] | None = None
    encoding: VideoEncoding | None = None
    split_started_at: UtcMillis | None = None
    container: Literal["mp4", "mov", "mkv"] = "mp4"


class ChunkReady(Event):
    RECORD: ClassVar[str] = "ChunkReady"

    job_id: UUID
    chunk_index: Count
    # None while the splitter is still reading the source (v4); the count is in `JobSplit`.
    chunk_count: Positive | None = None
    object_key: str
    first_frame: LongCount
    frame_count: Positive
    first_output_frame: LongCount
    shares_last_frame: bool
    ends_scene: bool
    timesteps: tuple[OutputSlot, ...]
    engine: str
    quality: str
    width: Positive
    height: Positive
    pix_fmt: str
    attempt: Positive
    source: SourceRange | None = None
    encoding: VideoEncoding | None = None
    out_fps_num: Count = 0
    out_fps_den: Positive = 1
    model: str = "auto"


class ChunkInterpolated(Event):
    RECORD: ClassVar[str] = "ChunkInterpolated"

    job_id: UUID
    chunk_index: Count
    object_key: str
    frames_out: Count
    worker_id: str
    lease_epoch: Long
    attempt: Positive
    engine: str
    device: str
    scale: float = Field(gt=0.0)
    interp_seconds: float = Field(ge=0.0)
    finished_at: UtcMillis
    quality_psnr_db: float | None = None
    quality_ssim: float | None = None
    quality_samples: Count = 0
    quality_seconds: float = Field(default=0.0, ge=0.0)
    batch_size: Positive | None = None
    oom_retries: Count = 0
    encoded_bytes: LongCount = 0
    started_at: UtcMillis | None = None
    model: str | None = None
    model_scores: dict[str, float] | None = None


class ChunkModel(AvroModel):
    RECORD: ClassVar[str] = "ChunkModel"

    chunk_index: Count
    model: str
    chosen_by: Literal["job", "check", "rule"]
    scores: dict[str, float] = Field(default_factory=dict)


class QualityReport(AvroModel):
    RECORD: ClassVar[str] = "QualityReport"

    psnr_db: float
    ssim: float | None = None
    chunks_checked: Positive
    worst_chunk_index: Count
    worst_chunk_psnr_db: float
    psnr_floor_db: float
    chunks_below_floor: tuple[Count, ...]
    model_chunks: dict[str, Count] = Field(default_factory=dict)
    chunk_models: tuple[ChunkModel, ...] = ()


class TimingReport(AvroModel):
    RECORD: ClassVar[str] = "TimingReport"

    input_vfr: bool
    vfr_converted: bool
    in_duration_s: float
    out_duration_s: float
    out_frames_measured: LongCount
    audio_duration_s: float | None = None
    audio_video_drift_s: float | None = None
    scene_cut_frames: tuple[LongCount, ...]
    scene_cut_times_s: tuple[float, ...]


class JobCompleted(Event):
    RECORD: ClassVar[str] = "JobCompleted"

    job_id: UUID
    bucket: str
    key: str
    params: JobParams
    output_bucket: str
    output_key: str
    output_size_bytes: LongCount
    in_fps_num: Positive
    in_fps_den: Positive
    out_fps_num: Positive
    out_fps_den: Positive
    in_frame_count: LongCount
    out_frame_count: LongCount
    duration_s: float
    processing_seconds: float
    completed_at: UtcMillis
    status: Literal["completed", "completed_with_warnings"] = "completed"
    quality: QualityReport | None = None
    timing: TimingReport | None = None


class JobFailed(Event):
    RECORD: ClassVar[str] = "JobFailed"

    job_id: UUID
    bucket: str | None
    key: str | None
    params: JobParams | None
    stage: str
    chunk_index: Count | None
    error_code: str
    error_message: str
    failed_at: UtcMillis


class JobCancelled(Event):
    RECORD: ClassVar[str] = "JobCancelled"

    job_id: UUID
    tenant_id: str | None
    bucket: str | None
    key: str | None
    webhook_url: str | None
    previous_status: str | None
    progress: Annotated[int, Field(ge=0, le=100)]
    cancelled_at: UtcMillis


class DeadLetter(Event):
    RECORD: ClassVar[str] = "DeadLetter"

    origin_topic: str
    origin_partition: Count
    origin_offset: LongCount
    origin_timestamp: UtcMillis | None
    key: bytes | None
    payload: bytes
    headers: dict[str, str]
    error_code: str
    reason: str
    service: str
    attempts: Count
    failed_at: UtcMillis
    job_id: UUID | None


NESTED_MODELS: tuple[type[AvroModel], ...] = (
    JobParams,
    MediaProbe,
    OutputSlot,
    ChunkModel,
    QualityReport,
    TimingReport,
    VideoEncoding,
    SourceRange,
)
EVENT_MODELS: tuple[type[Event], ...] = (
    VideoUploaded,
    JobSplit,
    ChunkReady,
    ChunkInterpolated,
    JobCompleted,
    JobFailed,
    JobCancelled,
    DeadLetter,
)
"""Every top-level record's model; the contract tests check this covers every schema in the catalog."""

E = TypeVar("E", bound=Event)


def encode_event(catalog: SchemaCatalog, event: Event) -> bytes:
    """Single-object-encode an event with the newest version of its record."""
    return catalog.encode(event.RECORD, event.to_avro())


def decode_event(catalog: SchemaCatalog, payload: bytes, model_type: type[E]) -> E:
    """Decode a message that must be a `model_type` event (any version), as the newest model.

    Raises the codec's `InvalidMessage` family, plus `InvalidMessage` with code `E_EVENT_INVALID` when
    the datum decodes but breaks the model's rules (e.g. a multiplier of 3): permanent, so it is
    dead-lettered like any other bad message.
    """
    record, datum = catalog.decode(payload, model_type.RECORD)
    try:
        return model_type.from_avro(datum)
    except ValidationError as exc:
        raise InvalidMessage(
            f"{record} decodes but is not a valid event: {exc.error_count()} error(s): "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
            code="E_EVENT_INVALID",
        ) from exc
