"""Configuration shared by every service, read from the environment with `infra/local.env` as defaults.

Only `config.py` modules (and this one) read the environment. Each service subclasses
`CommonSettings` with its own knobs; the objects are frozen so configuration cannot drift at run time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_ENV = REPO_ROOT / "infra" / "local.env"


class CommonSettings(BaseSettings):
    """Endpoints and credentials every service needs (names match `infra/local.env`)."""

    model_config = SettingsConfigDict(
        env_file=LOCAL_ENV, env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_access_key: str = "infiniteflow"
    s3_secret_key: SecretStr = SecretStr("")
    s3_region: str = "us-east-1"
    incoming_bucket: str = "incoming"
    output_bucket: str = "outputs"
    work_bucket: str = "work"
    models_bucket: str = "models"
    # Ranged GETs side by side when a service downloads a whole object (ingest's probe copy, the
    # muxer's source): one stream is bound by one connection's copy loop (bench-planning e).
    download_streams: int = Field(default=2, ge=1, le=16)
    # Object lifecycle (days after writing; 0 keeps objects): uploads and results are the user's and
    # kept by default; work objects are deleted when their job ends, and this expiry is the backstop.
    incoming_retention_days: int = Field(default=0, ge=0)
    output_retention_days: int = Field(default=0, ge=0)
    work_retention_days: int = Field(default=2, ge=1)
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: SecretStr = SecretStr(
        "postgresql+asyncpg://infiniteflow:infiniteflow@127.0.0.1:5433/infiniteflow"
    )
    webhook_secret: SecretStr = SecretStr("")
    api_url: str = "http://127.0.0.1:8000"
    prometheus_url: str = "http://127.0.0.1:9090"
    log_level: str = "INFO"
    # Port of this process's Prometheus /metrics endpoint; 0 lets the OS pick (tests), None disables it.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # Address /metrics, /healthz and /readyz listen on: loopback here, 0.0.0.0 in a pod.
    metrics_host: str = "127.0.0.1"
    # Static group membership (KIP-345): a stable id per replica (pod name) lets a restarted member
    # take its partitions back without a rebalance of the whole group. Empty: dynamic membership.
    kafka_group_instance_id: str | None = None
    # Seconds a consumer may stay outside its group before liveness fails and the process restarts.
    kafka_group_grace_s: float = Field(default=180.0, gt=0)
    # After SIGTERM, how long the message in hand may take to finish (or be handed back) before the
    # process closes anyway; keep it under the orchestrator's termination grace period.
    shutdown_grace_s: float = Field(default=20.0, gt=0)
    # Where Prometheus' file-based discovery looks for this process's /metrics target.
    prometheus_targets_dir: Path | None = REPO_ROOT / ".run" / "prometheus" / "targets"
    # Retry policy for a message whose handling failed transiently, before the consumer gives up.
    # Defaults ride out about a minute of an unavailable server (0.5 s doubling to 30 s, ≥ 60 s in all).
    retry_max_attempts: int = Field(default=10, ge=1)
    retry_base_delay_s: float = Field(default=0.5, gt=0)
    retry_max_delay_s: float = Field(default=30.0, gt=0)
    # DLQ circuit breaker: stop the consumer when more than this share of recent messages were invalid.
    dlq_max_invalid_ratio: float = Field(default=0.5, gt=0, le=1)
    dlq_breaker_window: int = Field(default=20, ge=1)
    dlq_breaker_min_messages: int = Field(default=10, ge=1)
    # Fault tests only (infiniteflow_common.chaos): the crash point to die at once, and its marker file;
    # or, with `crash_match`, die by SIGKILL every time the point is reached for that one item.
    crash_at: str | None = None
    crash_marker: Path | None = None
    crash_match: str | None = None
    # With `crash_match`: raise this built-in exception (`ValueError`, `RuntimeError`, `KeyError`, …)
    # there instead of dying — an error nobody classified, such as a codec library's or the GPU's.
    crash_raise: str | None = None
