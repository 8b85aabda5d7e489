"""What a webhook says and how it is signed and judged: the notifier's pure core (no Kafka, SQL or HTTP).

Messages follow the Standard Webhooks spec (https://www.standardwebhooks.com): a JSON body
`{"type", "timestamp", "data"}` sent with `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. The id is derived from
(job_id, event type), so a replayed event maps to the same message and a receiver can dedupe on it.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from fractions import Fraction
from typing import Any

from standardwebhooks import Webhook

from infiniteflow_common.events import JobCancelled, JobCompleted, JobFailed, JobParams
from infiniteflow_common.reports import timing_view
from services.notifier.schedule import RetryPolicy

USER_AGENT = "InfiniteFlow-Webhooks/1"
# Namespace of webhook ids; changing it would re-identify every message, so it is fixed forever.
WEBHOOK_ID_NAMESPACE = uuid.UUID("6f1c3a52-2d4e-5b8f-9a07-1c2e3f405a6b")

E_WEBHOOK_EXHAUSTED = "E_WEBHOOK_EXHAUSTED"
"""Every attempt of the retry schedule failed with a timeout, connection error, 3xx, 5xx or 429."""
E_WEBHOOK_REJECTED = "E_WEBHOOK_REJECTED"
"""The receiver answered a 4xx that retrying cannot fix (e.g. 400, 401, 404)."""
E_WEBHOOK_GONE = "E_WEBHOOK_GONE"
"""The receiver answered 410 Gone: its endpoint is now disabled and nothing more is sent to it."""
E_WEBHOOK_ENDPOINT_DISABLED = "E_WEBHOOK_ENDPOINT_DISABLED"
"""Not sent: the endpoint answered 410 Gone earlier (an operator can enable it again)."""


class EventType(StrEnum):
    """The webhook types, named after the topics they come from."""

    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"


class WebhookStatus(StrEnum):
    """Life of one webhook message; all but `pending` are final."""

    PENDING = "pending"
    DELIVERED = "delivered"
    EXHAUSTED = "exhausted"
    SKIPPED = "skipped"


class Outcome(StrEnum):
    """What one attempt decided (stored per attempt in `webhook_deliveries.outcome`)."""

    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"
    EXHAUSTED = "exhausted"


def webhook_id(job_id: uuid.UUID, event_type: EventType) -> str:
    """The message id of `event_type` for `job_id`: the same on every replay and every attempt."""
    return f"msg_{uuid.uuid5(WEBHOOK_ID_NAMESPACE, f'{event_type.value}:{job_id}').hex}"


def iso_utc(moment: datetime) -> str:
    """ISO-8601 in UTC with a `Z`, millisecond precision (what the events carry)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rational(num: int, den: int) -> str:
    """A frame rate as the exact rational string users compare against ffprobe: `num/den`."""
    return f"{num}/{den}"


def _params(params: JobParams | None) -> dict[str, Any] | None:
    return None if params is None else params.model_dump(mode="json")


def completed_data(
    event: JobCompleted, *, output_url: str, output_url_expires_at: datetime
) -> dict[str, Any]:
    """The `data` of a job.completed webhook: source, parameters, the output and its presigned URL.

    `status` is `completed` or `completed_with_warnings`; `quality` is the self-check summary (null
    when no chunk was checked) whose `chunks_below_floor` names the chunks behind a warning and whose
    `model_chunks` / `chunk_models` say which RIFE model did each chunk (with both models' check scores
    where `model=auto` chose by checking); `timing`
    is the timing report (rates, frame counts, durations, audio drift, scene cuts, VFR).
    """
    return {
        "job_id": str(event.job_id),
        "status": event.status,
        "source": {"bucket": event.bucket, "key": event.key},
        "params": _params(event.params),
        "input": {
            "fps": rational(event.in_fps_num, event.in_fps_den),
            "frame_count": event.in_frame_count,
        },
        "output": {
            "bucket": event.output_bucket,
            "key": event.output_key,
            "url": output_url,
            "url_expires_at": iso_utc(output_url_expires_at),
            "size_bytes": event.output_size_bytes,
            "fps": rational(event.out_fps_num, event.out_fps_den),
            "frame_count": event.out_frame_count,
        },
        "duration_s": event.duration_s,
        "processing_seconds": event.processing_seconds,
        "quality": None if event.quality is None else event.quality.model_dump(mode="json"),
        "timing": (
            None
            if event.timing is None
            else timing_view(
                event.timing,
                in_rate=Fraction(event.in_fps_num, event.in_fps_den),
                out_rate=Fraction(event.out_fps_num, event.out_fps_den),
                in_frames=event.in_frame_count,
            ).model_dump(mode="json")
        ),
    }


def failed_data(event: JobFailed, *, params: JobParams | None = None) -> dict[str, Any]:
    """The `data` of a job.failed webhook: what was asked and the stable error code with its message.

    `params` stands in when the event carries none (a job that failed before its parameters were known
    to the failing stage) but the job row has them.
    """
    source = None if event.bucket is None else {"bucket": event.bucket, "key": event.key}
    return {
        "job_id": str(event.job_id),
        "source": source,
        "params": _params(event.params or params),
        "error": {
            "code": event.error_code,
            "message": event.error_message,
            "stage": event.stage,
            "chunk_index": event.chunk_index,
        },
    }


def cancelled_data(event: JobCancelled, *, params: JobParams | None = None) -> dict[str, Any]:
    """The `data` of a job.cancelled webhook: what was asked, how far it got, and when it stopped.

    `params` come from the job row (the event carries only the webhook URL); `previous_status` is the
    stage the job was in (null when only a repeated cancel request announced it).
    """
    source = None if event.bucket is None else {"bucket": event.bucket, "key": event.key}
    return {
        "job_id": str(event.job_id),
        "status": "cancelled",
        "source": source,
        "params": _params(params),
        "previous_status": event.previous_status,
        "progress": event.progress,
        "cancelled_at": iso_utc(event.cancelled_at),
    }


def encode_body(event_type: EventType, occurred_at: datetime, data: dict[str, Any]) -> str:
    """The exact JSON text sent on every attempt (compact, UTF-8; built once and stored)."""
    message = {"type": event_type.value, "timestamp": iso_utc(occurred_at), "data": data}
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Signer:
    """Signs bodies with the `whsec_<base64>` secret, through the `standardwebhooks` reference code."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def headers(self, msg_id: str, body: str, at: datetime) -> dict[str, str]:
        """Every header of one attempt at `at` (its unix second is the signed `webhook-timestamp`)."""
        seconds = int(at.timestamp())
        signed_at = datetime.fromtimestamp(seconds, UTC)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(seconds),
            "webhook-signature": str(self._webhook.sign(msg_id, signed_at, body)),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }


class Verdict(StrEnum):
    """How a response (or its absence) is judged before the schedule is consulted."""

    DELIVERED = "delivered"
    RETRYABLE = "retryable"
    REJECTED = "rejected"


# 408 Request Timeout and 425 Too Early say "try again", like 429; other 4xx say the request is wrong.
RETRYABLE_4XX = frozenset({408, 425, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE = 410


def judge(status_code: int | None) -> Verdict:
    """2xx delivered; no response (timeout, connection error), 3xx, 5xx, 408/425/429 retryable; 4xx rejected.

    Redirects are not followed (the signed body must not wander to another host) but are retried,
    since a temporary redirect may go away within the schedule.
    """
    if status_code is None:
        return Verdict.RETRYABLE
    if 200 <= status_code < 300:
        return Verdict.DELIVERED
    if 400 <= status_code < 500 and status_code not in RETRYABLE_4XX:
        return Verdict.REJECTED
    return Verdict.RETRYABLE


@dataclass(frozen=True)
class Decision:
    """What to do after an attempt: its outcome and, for `RETRY`, the delay before the next one."""

    outcome: Outcome
    retry_in_s: float | None = None
    code: str | None = None

    @property
    def error_code(self) -> str | None:
        """The dead-letter code of a final failure, None otherwise."""
        if self.code is not None:
            return self.code
        return {Outcome.REJECTED: E_WEBHOOK_REJECTED, Outcome.EXHAUSTED: E_WEBHOOK_EXHAUSTED}.get(
            self.outcome
        )


def decide(
    status_code: int | None,
    attempt: int,
    policy: RetryPolicy,
    *,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """The outcome of attempt `attempt` (1-based) that got `status_code` (None: no response).

    `retry_after_s` is only honoured for 429 and 503, the statuses the header is defined for.
    """
    verdict = judge(status_code)
    if status_code == GONE:
        return Decision(Outcome.REJECTED, code=E_WEBHOOK_GONE)
    if verdict is Verdict.DELIVERED:
        return Decision(Outcome.DELIVERED)
    if verdict is Verdict.REJECTED:
        return Decision(Outcome.REJECTED)
    honoured = retry_after_s if status_code in RETRY_AFTER_STATUSES else None
    delay = policy.next_delay(attempt, retry_after_s=honoured, rng=rng)
    return Decision(Outcome.EXHAUSTED) if delay is None else Decision(Outcome.RETRY, delay)
