"""Ingest's settings: job defaults, API limits, probe limits, sweeper cadence (env overrides each)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from infiniteflow_common.destinations import LoopbackAllowlist
from infiniteflow_common.settings import CommonSettings

GIB = 1024**3

# Demuxer short names ffprobe may use on an upload. Anything else (hls, concat, image2, the *_pipe
# image demuxers, tty, …) is refused before it can open nested files or URLs.
DEFAULT_ALLOWED_FORMATS: tuple[str, ...] = (
    "mov",
    "mp4",
    "m4a",
    "3gp",
    "3g2",
    "mj2",
    "matroska",
    "webm",
    "avi",
    "mpegts",
    "flv",
    "ogg",
)


class IngestSettings(CommonSettings):
    """Frozen configuration of the ingest service; every field reads the same-named env variable."""

    # Local development only: loopback hosts, addresses or networks webhooks may reach (ingest accepts
    # such URLs, the notifier sends to them); empty in production. Any other range is a settings error.
    webhook_allowed_destinations: LoopbackAllowlist = ()

    # Job defaults for options the user leaves out.
    default_multiplier: int = Field(default=2)
    default_engine: str = "rife"
    default_quality: str = "fast"
    allowed_engines: tuple[str, ...] = ("rife", "flow")
    allowed_qualities: tuple[str, ...] = ("fast", "tta", "best")
    # RIFE model: 'auto' lets the worker compare both on each chunk's own frames.
    default_model: str = "auto"
    allowed_models: tuple[str, ...] = ("auto", "hdv3", "v4.25")

    # HTTP API.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    max_upload_bytes: int = Field(default=2 * GIB, ge=1)
    presign_expiry_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # Every API call needs a tenant's key. Local development (infra/local.env) turns this off: callers
    # without a key then act anonymously and see only jobs that belong to no tenant.
    api_auth_required: bool = True
    # Requests per minute per tenant, unless the tenant has its own limit.
    api_rate_limit_per_minute: int = Field(default=120, ge=1)
    # Origins whose pages may call the API from a browser (CORS); empty allows none.
    cors_allowed_origins: tuple[str, ...] = ()

    # Safe probing.
    scratch_dir: Path = Path(tempfile.gettempdir()) / "infiniteflow-ingest"
    probe_timeout_s: float = Field(default=60.0, gt=0)
    probe_probesize: int = Field(default=50_000_000, ge=32)
    probe_analyzeduration_us: int = Field(default=20_000_000, ge=0)
    probe_cpu_seconds: int = Field(default=120, ge=1)
    probe_memory_bytes: int = Field(default=2 * GIB, ge=64 * 1024**2)
    probe_vfr_packets: int = Field(default=600, ge=3)
    # Run ffprobe in a network namespace of its own: "auto" where the machine allows it, "required"
    # refuses to start without it, "off" never.
    probe_network_isolation: Literal["auto", "required", "off"] = "auto"
    max_width: int = Field(default=8192, ge=16)
    max_height: int = Field(default=8192, ge=16)
    max_output_frames: int = Field(default=2_000_000, ge=2)
    max_streams: int = Field(default=32, ge=1)
    min_fps: float = Field(default=1.0, gt=0)
    max_fps: float = Field(default=480.0, gt=0)
    allowed_formats: tuple[str, ...] = DEFAULT_ALLOWED_FORMATS

    # Queued jobs' estimated starts (infiniteflow_common.queue): megapixels interpolated per second per
    # engine, the splitter's setting of the same name, until the workers' finished chunks measure it.
    engine_mpix_per_s: dict[str, float] = Field(default_factory=lambda: {"flow": 2.0, "rife": 0.6})

    # Metrics and the orphan sweeper.
    metrics_port: int | None = Field(default=9101, ge=0, le=65535)
    sweeper_interval_s: float = Field(default=60.0, gt=0)
    sweeper_min_age_s: float = Field(default=120.0, ge=0)
