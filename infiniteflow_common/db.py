"""PostgreSQL state through SQLModel + asyncpg. The schema itself is owned by Alembic migrations.

Natural keys make replays harmless: a job is unique by its source object (bucket, key, etag), a chunk by
(job_id, chunk_index), a webhook attempt by (webhook_id, attempt).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlmodel import Field, SQLModel

from infiniteflow_common.domain import ChunkStatus, JobResult, JobStatus, RequestedParams
from infiniteflow_common.events import ChunkReady, JobParams, JobSplit, MediaProbe, VideoUploaded
from infiniteflow_common.output import OutputOptions
from infiniteflow_common.pydantic_json import PydanticJSON


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the state uses."""
    return datetime.now(UTC)


def _ts(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


class Job(SQLModel, table=True):
    """One user request: a source object turned into a higher-frame-rate output."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("source_bucket", "source_key", "source_etag", name="uq_jobs_source_object"),
        Index("ix_jobs_status", "status"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # The tenant that started the job (its API key, or its bucket prefix); None for anonymous local use.
    tenant_id: str | None = Field(default=None, sa_column=Column(String(64)))
    source: str = Field(sa_column=Column(String(16), nullable=False))
    source_bucket: str = Field(sa_column=Column(Text, nullable=False))
    source_key: str = Field(sa_column=Column(Text, nullable=False))
    source_etag: str = Field(sa_column=Column(Text, nullable=False))
    source_version: str | None = Field(default=None, sa_column=Column(Text))
    size_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    status: str = Field(default=JobStatus.PENDING.value, sa_column=Column(String(32), nullable=False))
    # −50…50: higher goes first among the tenant's own jobs (fair dispatch; `dispatch`).
    priority: int = Field(default=0, sa_column=Column(SmallInteger, nullable=False, server_default="0"))
    progress: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    # What the job was asked to do, or what was sent when that did not parse (rejected at ingest).
    params: JobParams | RequestedParams = Field(
        default_factory=RequestedParams,
        sa_column=Column(PydanticJSON(JobParams, alternatives=(RequestedParams,)), nullable=False),
    )
    # The source as ingest probed it; null until then (and for a job rejected before its probe).
    probe: MediaProbe | None = Field(default=None, sa_column=Column(PydanticJSON(MediaProbe)))
    chunks_total: int | None = Field(default=None, sa_column=Column(Integer))
    chunks_done: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    error_code: str | None = Field(default=None, sa_column=Column(String(64)))
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    output_bucket: str | None = Field(default=None, sa_column=Column(Text))
    output_key: str | None = Field(default=None, sa_column=Column(Text))
    # What a completed job produced (output, rates, quality, timing); null until then.
    result: JobResult | None = Field(default=None, sa_column=Column(PydanticJSON(JobResult)))
    # The plan: the `JobSplit` event as announced (output rate and count, scene starts, VFR handling).
    plan: JobSplit | None = Field(default=None, sa_column=Column(PydanticJSON(JobSplit)))
    # Quality self-check: mean of the chunks' scores, the worst chunk, and the chunks below the floor.
    quality_psnr_db: float | None = None
    quality_ssim: float | None = None
    quality_worst_chunk: int | None = Field(default=None, sa_column=Column(Integer))
    quality_worst_psnr_db: float | None = None
    quality_low_chunks: list[int] | None = Field(default=None, sa_column=Column(JSONB))
    # Output video options (codec, encoder, crf or bitrate, preset); null: the muxer's defaults (H.264).
    output_options: OutputOptions | None = Field(default=None, sa_column=Column(PydanticJSON(OutputOptions)))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    split_at: datetime | None = _ts()
    completed_at: datetime | None = _ts()
    cancelled_at: datetime | None = _ts()
    # Stage wall times: split = split_at - split_started_at, mux = completed_at - mux_started_at.
    split_started_at: datetime | None = _ts()
    mux_started_at: datetime | None = _ts()
    # The muxer replica assembling the job and until when its claim holds (renewed while it works).
    mux_owner: str | None = Field(default=None, sa_column=Column(Text))
    mux_lease_expires_at: datetime | None = _ts()
    # The split as leased background work (`splits`): the `video.uploaded` it answers, the planner
    # holding it and until when, and how many times a planner started it.
    split_request: VideoUploaded | None = Field(default=None, sa_column=Column(PydanticJSON(VideoUploaded)))
    split_owner: str | None = Field(default=None, sa_column=Column(Text))
    split_lease_expires_at: datetime | None = _ts()
    split_tries: int = Field(default=0, sa_column=Column(SmallInteger, nullable=False, server_default="0"))

    @property
    def job_params(self) -> JobParams | None:
        """The job's parameters; None when its request did not parse (it was rejected at ingest)."""
        return self.params if isinstance(self.params, JobParams) else None


class Chunk(SQLModel, table=True):
    """One scene-aware slice of a job, interpolated by one worker under a renewable lease."""

    __tablename__ = "chunks"

    job_id: uuid.UUID = Field(foreign_key="jobs.id", primary_key=True, ondelete="CASCADE")
    chunk_index: int = Field(primary_key=True)
    first_frame: int = Field(sa_column=Column(Integer, nullable=False))
    frame_count: int = Field(sa_column=Column(Integer, nullable=False))
    status: str = Field(default=ChunkStatus.PENDING.value, sa_column=Column(String(16), nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    worker: str | None = Field(default=None, sa_column=Column(Text))
    lease_epoch: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    lease_expires_at: datetime | None = _ts()
    output_key: str | None = Field(default=None, sa_column=Column(Text))
    frames_out: int | None = Field(default=None, sa_column=Column(Integer))
    interp_seconds: float | None = None
    # Quality self-check of the chunk (null when not checked) and its cost, inside interp_seconds.
    quality_psnr_db: float | None = None
    quality_ssim: float | None = None
    quality_samples: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    quality_seconds: float | None = None
    # What the worker finally used (lower after out-of-memory retries).
    scale: float | None = None
    batch_size: int | None = Field(default=None, sa_column=Column(Integer))
    oom_retries: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    # Size of the encoded output chunk, and which model made it (with the candidates' scores under auto).
    encoded_bytes: int | None = Field(default=None, sa_column=Column(BigInteger))
    model: str | None = Field(default=None, sa_column=Column(String(32)))
    model_scores: dict[str, float] | None = Field(default=None, sa_column=Column(JSONB))
    # The ChunkReady event that announced this chunk, so a replay can re-announce it unchanged.
    spec: ChunkReady | None = Field(default=None, sa_column=Column(PydanticJSON(ChunkReady)))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()


class WebhookDelivery(SQLModel, table=True):
    """Every attempt to deliver a webhook, successful or not."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("webhook_id", "attempt", name="uq_webhook_attempt"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    webhook_id: str = Field(sa_column=Column(Text, nullable=False))
    job_id: uuid.UUID = Field(sa_column=Column(nullable=False, index=True))
    event_type: str = Field(sa_column=Column(String(32), nullable=False))
    url: str = Field(sa_column=Column(Text, nullable=False))
    attempt: int = Field(sa_column=Column(Integer, nullable=False))
    status_code: int | None = Field(default=None, sa_column=Column(Integer))
    outcome: str = Field(sa_column=Column(String(16), nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text))
    latency_ms: float | None = None
    attempted_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class Tenant(SQLModel, table=True):
    """A customer: its jobs, keys, rate limit and the bucket prefix its drops and outputs live under."""

    __tablename__ = "tenants"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    name: str = Field(sa_column=Column(Text, nullable=False))
    bucket_prefix: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    # Requests per minute; None means the operator's default (API_RATE_LIMIT_PER_MINUTE).
    rate_limit_per_minute: int | None = Field(default=None, sa_column=Column(Integer))
    # The tenant's share of the workers against other tenants with work waiting (default 1).
    weight: float = Field(default=1.0, sa_column=Column(Float, nullable=False, server_default="1"))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ApiKey(SQLModel, table=True):
    """An API key of a tenant; only its SHA-256 is stored (keys are 256-bit random, so no slow hash)."""

    __tablename__ = "api_keys"

    id: str = Field(sa_column=Column(String(16), primary_key=True))
    tenant_id: str = Field(sa_column=Column(String(64), nullable=False))
    key_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    label: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    last_used_at: datetime | None = _ts()
    revoked_at: datetime | None = _ts()


class WebhookEndpoint(SQLModel, table=True):
    """A webhook URL that answered 410 Gone: nothing more is sent to it."""

    __tablename__ = "webhook_endpoints"

    url: str = Field(sa_column=Column(Text, primary_key=True))
    disabled_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    reason: str = Field(sa_column=Column(Text, nullable=False))
    job_id: uuid.UUID | None = None


def make_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    """An asyncpg engine with pre-ping, so a restarted PostgreSQL costs one retry, not a crash."""
    return create_async_engine(database_url, pool_pre_ping=True, pool_size=5, max_overflow=5, **kwargs)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: committed when the block exits cleanly, rolled back otherwise."""
    async with factory() as session, session.begin():
        yield session


async def ping(factory: async_sessionmaker[AsyncSession]) -> None:
    """Raise unless the database answers a `select 1` (health checks)."""
    async with factory() as session:
        await session.execute(text("select 1"))
