"""The webhook message: its id, its exact body, its signature and how a response is judged."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from infiniteflow_common.events import (
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobParams,
    QualityReport,
    TimingReport,
)
from services.notifier.schedule import RetryPolicy
from services.notifier.webhooks import (
    E_WEBHOOK_EXHAUSTED,
    E_WEBHOOK_REJECTED,
    USER_AGENT,
    EventType,
    Outcome,
    Signer,
    Verdict,
    cancelled_data,
    completed_data,
    decide,
    encode_body,
    failed_data,
    iso_utc,
    judge,
    webhook_id,
)

SECRET = "whsec_" + base64.b64encode(b"unit-test-webhook-secret").decode()
JOB_ID = uuid.UUID("0b6f3f7e-8f53-4c44-9b1a-5d2f0c7e9a11")
AT = datetime(2026, 11, 23, 23, 59, 58, 123000, tzinfo=UTC)
PARAMS = JobParams(
    multiplier=2, target_fps=None, engine="rife", quality="high", webhook_url="http://127.0.0.1:1/hook"
)


def completed_event(**changes: object) -> JobCompleted:
    fields: dict[str, object] = {
        "job_id": JOB_ID,
        "bucket": "incoming",
        "key": "clips/été 1+1%.mp4",
        "params": PARAMS,
        "output_bucket": "outputs",
        "output_key": f"outputs/{JOB_ID}/clip.mp4",
        "output_size_bytes": 123_456,
        "in_fps_num": 24000,
        "in_fps_den": 1001,
        "out_fps_num": 48000,
        "out_fps_den": 1001,
        "in_frame_count": 240,
        "out_frame_count": 480,
        "duration_s": 10.01,
        "processing_seconds": 12.5,
        "completed_at": AT,
    }
    fields.update(changes)
    return JobCompleted.model_validate(fields)


def failed_event(**changes: object) -> JobFailed:
    fields: dict[str, object] = {
        "job_id": JOB_ID,
        "bucket": "incoming",
        "key": "clip.mp4",
        "params": PARAMS,
        "stage": "interpolate",
        "chunk_index": 3,
        "error_code": "E_ENGINE_OOM",
        "error_message": "CUDA ran out of memory on chunk 3; lower the batch size",
        "failed_at": AT,
    }
    fields.update(changes)
    return JobFailed.model_validate(fields)


def test_the_webhook_id_is_the_same_for_every_replay_and_differs_per_job_and_type() -> None:
    first = webhook_id(JOB_ID, EventType.JOB_COMPLETED)
    assert first == webhook_id(JOB_ID, EventType.JOB_COMPLETED)
    assert first != webhook_id(JOB_ID, EventType.JOB_FAILED)
    assert first != webhook_id(uuid.uuid4(), EventType.JOB_COMPLETED)
    assert first.startswith("msg_")
    assert len(first) == 4 + 32
    # Fixed forever: receivers dedupe on it across our deployments and upgrades.
    assert (
        first
        == "msg_"
        + uuid.uuid5(uuid.UUID("6f1c3a52-2d4e-5b8f-9a07-1c2e3f405a6b"), f"job.completed:{JOB_ID}").hex
    )


def test_a_completed_body_carries_source_params_output_url_rates_counts_and_timings() -> None:
    expires = AT + timedelta(days=7)
    body = encode_body(
        EventType.JOB_COMPLETED,
        AT,
        completed_data(
            completed_event(), output_url="http://s3/presigned?X-Amz=1", output_url_expires_at=expires
        ),
    )
    assert json.loads(body) == {
        "type": "job.completed",
        "timestamp": "2026-11-23T23:59:58.123Z",
        "data": {
            "job_id": str(JOB_ID),
            "status": "completed",
            "source": {"bucket": "incoming", "key": "clips/été 1+1%.mp4"},
            "params": {
                "multiplier": 2,
                "target_fps": None,
                "engine": "rife",
                "quality": "high",
                "webhook_url": "http://127.0.0.1:1/hook",
                "model": "auto",
                "priority": 0,
            },
            "input": {"fps": "24000/1001", "frame_count": 240},
            "output": {
                "bucket": "outputs",
                "key": f"outputs/{JOB_ID}/clip.mp4",
                "url": "http://s3/presigned?X-Amz=1",
                "url_expires_at": "2026-11-30T23:59:58.123Z",
                "size_bytes": 123_456,
                "fps": "48000/1001",
                "frame_count": 480,
            },
            "duration_s": 10.01,
            "processing_seconds": 12.5,
            "quality": None,
            "timing": None,
        },
    }
    # Compact UTF-8 JSON with the type first: the exact bytes that are signed and stored.
    assert body.startswith('{"type":"job.completed","timestamp":"2026-11-23T23:59:58.123Z","data":{')
    assert "été" in body


def test_a_completed_with_warnings_body_names_the_chunks_below_the_quality_floor() -> None:
    quality = QualityReport(
        psnr_db=29.5,
        ssim=0.91,
        chunks_checked=3,
        worst_chunk_index=2,
        worst_chunk_psnr_db=18.25,
        psnr_floor_db=22.0,
        chunks_below_floor=(2,),
    )
    event = completed_event(status="completed_with_warnings", quality=quality)
    data = completed_data(event, output_url="http://s3/x", output_url_expires_at=AT)
    assert data["status"] == "completed_with_warnings"
    assert data["quality"] == {
        "psnr_db": 29.5,
        "ssim": 0.91,
        "chunks_checked": 3,
        "worst_chunk_index": 2,
        "worst_chunk_psnr_db": 18.25,
        "psnr_floor_db": 22.0,
        "chunks_below_floor": [2],
        "model_chunks": {},
        "chunk_models": [],
    }


def test_a_completed_body_carries_the_timing_report_with_exact_rates() -> None:
    timing = TimingReport(
        input_vfr=False,
        vfr_converted=False,
        in_duration_s=10.01,
        out_duration_s=10.01,
        out_frames_measured=480,
        audio_duration_s=10.0,
        audio_video_drift_s=-0.01,
        scene_cut_frames=(120,),
        scene_cut_times_s=(5.005,),
    )
    data = completed_data(completed_event(timing=timing), output_url="http://s3/x", output_url_expires_at=AT)
    assert data["timing"]["input"]["fps"] == "24000/1001"
    assert data["timing"]["output"] == {"fps": "48000/1001", "frame_count": 480, "duration_s": 10.01}
    assert data["timing"]["audio"]["drift_s"] == -0.01
    assert data["timing"]["scene_cuts"] == [{"frame": 120, "time_s": 5.005}]


def test_a_failed_body_carries_the_error_code_message_stage_and_chunk() -> None:
    data = json.loads(encode_body(EventType.JOB_FAILED, AT, failed_data(failed_event())))
    assert data["type"] == "job.failed"
    assert data["data"]["error"] == {
        "code": "E_ENGINE_OOM",
        "message": "CUDA ran out of memory on chunk 3; lower the batch size",
        "stage": "interpolate",
        "chunk_index": 3,
    }
    assert data["data"]["source"] == {"bucket": "incoming", "key": "clip.mp4"}
    assert data["data"]["params"]["multiplier"] == 2


def test_a_failed_event_without_source_or_params_uses_the_job_rows_params() -> None:
    event = failed_event(bucket=None, key=None, params=None, chunk_index=None, stage="ingest")
    assert failed_data(event)["params"] is None
    data = failed_data(event, params=PARAMS)
    assert data["source"] is None
    assert data["params"]["webhook_url"] == "http://127.0.0.1:1/hook"
    assert data["error"]["chunk_index"] is None


def test_the_signature_is_hmac_sha256_of_id_timestamp_body_and_verifies_with_standardwebhooks() -> None:
    body = '{"type":"job.completed","data":{"key":"ünïcode"}}'
    headers = Signer(SECRET).headers("msg_abc", body, AT)
    assert headers["webhook-id"] == "msg_abc"
    assert headers["webhook-timestamp"] == str(int(AT.timestamp()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    expected = hmac.new(key, f"msg_abc.{int(AT.timestamp())}.{body}".encode(), hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT == "InfiniteFlow-Webhooks/1"


def test_a_fresh_signature_verifies_and_a_tampered_body_or_other_secret_does_not() -> None:
    body = encode_body(EventType.JOB_FAILED, AT, failed_data(failed_event()))
    headers = Signer(SECRET).headers("msg_x", body, datetime.now(UTC))
    assert Webhook(SECRET).verify(body.encode(), headers)["type"] == "job.failed"
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("E_ENGINE_OOM", "E_NONE").encode(), headers)
    other = "whsec_" + base64.b64encode(b"another-secret").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body.encode(), headers)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (299, Verdict.DELIVERED),
        (None, Verdict.RETRYABLE),
        (301, Verdict.RETRYABLE),
        (307, Verdict.RETRYABLE),
        (408, Verdict.RETRYABLE),
        (425, Verdict.RETRYABLE),
        (429, Verdict.RETRYABLE),
        (500, Verdict.RETRYABLE),
        (502, Verdict.RETRYABLE),
        (503, Verdict.RETRYABLE),
        (400, Verdict.REJECTED),
        (401, Verdict.REJECTED),
        (403, Verdict.REJECTED),
        (404, Verdict.REJECTED),
        (410, Verdict.REJECTED),
        (413, Verdict.REJECTED),
    ],
)
def test_responses_are_judged_as_the_spec_asks(status: int | None, verdict: Verdict) -> None:
    assert judge(status) is verdict


POLICY = RetryPolicy(schedule=(5.0, 300.0), jitter_ratio=0.0, retry_after_max_s=600.0)


def test_a_retryable_failure_retries_along_the_schedule_then_exhausts() -> None:
    assert decide(500, 1, POLICY).outcome is Outcome.RETRY
    assert decide(500, 1, POLICY).retry_in_s == 5.0
    assert decide(None, 2, POLICY).retry_in_s == 300.0
    last = decide(500, 3, POLICY)
    assert last.outcome is Outcome.EXHAUSTED
    assert last.error_code == E_WEBHOOK_EXHAUSTED


def test_a_4xx_is_rejected_at_once_whatever_attempts_are_left() -> None:
    decision = decide(404, 1, POLICY)
    assert decision.outcome is Outcome.REJECTED
    assert decision.error_code == E_WEBHOOK_REJECTED
    assert decision.retry_in_s is None


def test_a_2xx_is_delivered_and_has_no_error_code() -> None:
    decision = decide(200, 3, POLICY)
    assert decision.outcome is Outcome.DELIVERED
    assert decision.error_code is None


def test_retry_after_is_honoured_on_429_and_503_only() -> None:
    assert decide(429, 1, POLICY, retry_after_s=120).retry_in_s == 120.0
    assert decide(503, 1, POLICY, retry_after_s=120).retry_in_s == 120.0
    assert decide(500, 1, POLICY, retry_after_s=120).retry_in_s == 5.0
    assert decide(429, 2, POLICY, retry_after_s=10).retry_in_s == 300.0, "never earlier than scheduled"
    assert decide(429, 1, POLICY, retry_after_s=86_400).retry_in_s == 600.0, "capped"


def test_a_cancelled_webhook_says_how_far_the_job_got_and_what_was_asked() -> None:
    event = JobCancelled(
        job_id=JOB_ID,
        tenant_id="acme",
        bucket="incoming",
        key="tenants/acme/a.mp4",
        webhook_url="https://hooks.example/x",
        previous_status="splitting",
        progress=5,
        cancelled_at=AT,
    )
    body = json.loads(encode_body(EventType.JOB_CANCELLED, AT, cancelled_data(event, params=PARAMS)))
    assert body["type"] == "job.cancelled"
    data = body["data"]
    assert (data["status"], data["previous_status"], data["progress"]) == ("cancelled", "splitting", 5)
    assert data["source"] == {"bucket": "incoming", "key": "tenants/acme/a.mp4"}
    assert data["params"] == PARAMS.model_dump(mode="json")
    assert data["cancelled_at"] == iso_utc(AT)
    assert webhook_id(JOB_ID, EventType.JOB_CANCELLED) not in {
        webhook_id(JOB_ID, EventType.JOB_COMPLETED),
        webhook_id(JOB_ID, EventType.JOB_FAILED),
    }
