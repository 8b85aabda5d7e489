"""The notifier's settings: the shared endpoints plus the webhook delivery knobs (env names in capitals)."""

from __future__ import annotations

import base64
import binascii

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from infiniteflow_common.destinations import LoopbackAllowlist
from infiniteflow_common.settings import CommonSettings

# Standard Webhooks' suggested schedule after the first attempt, about a day in all.
DEFAULT_RETRY_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class NotifierSettings(CommonSettings):
    """What the notifier needs; `WEBHOOK_RETRY_SCHEDULE_S` is a JSON list of seconds, e.g. `[5, 300]`."""

    # Validation errors must not echo the webhook secret into logs.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    # Local development only: loopback hosts, addresses or networks webhooks may reach (ingest accepts
    # such URLs, the notifier sends to them); empty in production. Any other range is a settings error.
    webhook_allowed_destinations: LoopbackAllowlist = ()
    # Seconds one attempt may take, connect to last byte, before it counts as a timeout.
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # Delay before retry n (1-based) after a retryable failure; one more failure after the last entry
    # exhausts the webhook. An empty schedule means a single attempt.
    webhook_retry_schedule_s: tuple[float, ...] = Field(default=DEFAULT_RETRY_SCHEDULE_S)
    # Each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter] so retries of many webhooks
    # failing together (a receiver outage) do not arrive in lockstep.
    webhook_jitter_ratio: float = Field(default=0.2, ge=0, lt=1)
    # A receiver's Retry-After (on 429/503) is honoured up to this many seconds; longer asks are capped.
    webhook_retry_after_max_s: float = Field(default=3600.0, ge=0)
    # How often the delivery loop looks for due webhooks when it has not been woken up.
    webhook_poll_interval_s: float = Field(default=1.0, gt=0)
    # Webhooks one loop iteration claims (and sends concurrently).
    webhook_batch_size: int = Field(default=20, ge=1, le=1000)
    # /metrics of a notifier run by `infiniteflow services up` (make demo); the others use 9101-9104.
    metrics_port: int | None = Field(default=9105, ge=0, le=65535)
    # Validity of the presigned output URL in job.completed (SigV4 allows at most 7 days).
    webhook_output_url_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600)

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry delays must be >= 0 seconds")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        key = raw.removeprefix("whsec_").rstrip("=")
        try:
            decoded = base64.b64decode(key + "=" * (-len(key) % 4), validate=True) if key else b""
        except (binascii.Error, ValueError) as exc:
            raise ValueError("WEBHOOK_SECRET must be 'whsec_' followed by a base64 key") from exc
        if not decoded:
            raise ValueError("WEBHOOK_SECRET is empty: set 'whsec_<base64 key>' (see infra/local.env)")
        return value

    @property
    def claim_lease_s(self) -> float:
        """How long a claimed webhook stays invisible to other instances while its attempt runs."""
        return self.webhook_timeout_s + 30.0
