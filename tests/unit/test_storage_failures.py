"""Object-store errors: a gone, forbidden or replaced object fails its job; server trouble is retried."""

from __future__ import annotations

import errno

import pytest
from minio.error import S3Error, ServerError
from urllib3.exceptions import MaxRetryError, ProtocolError

from infiniteflow_common.errors import HandedBack, InvalidMessage, TransientError
from infiniteflow_common.failures import permanent_failure
from infiniteflow_common.storage import permanent_storage_failure


def s3_error(code: str, *, bucket: str | None = "incoming", key: str | None = "drops/clip.mp4") -> S3Error:
    return S3Error(None, code, f"{code} message", f"/{bucket}/{key}", "req", "host", bucket, key)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "wanted"),
    [
        ("NoSuchKey", "E_SOURCE_GONE"),
        ("NoSuchVersion", "E_SOURCE_GONE"),
        ("NoSuchBucket", "E_SOURCE_GONE"),
        ("AccessDenied", "E_SOURCE_FORBIDDEN"),
        ("PreconditionFailed", "E_SOURCE_CHANGED"),
    ],
)
def test_a_missing_forbidden_or_replaced_object_is_a_permanent_failure_with_a_code(
    code: str, wanted: str
) -> None:
    failure = permanent_storage_failure(s3_error(code))
    assert failure is not None
    assert failure.code == wanted
    assert "drops/clip.mp4" in failure.message
    again = permanent_failure(s3_error(code), "splitter")
    assert again is not None
    assert again.code == wanted


def test_a_failed_if_match_on_a_head_request_is_a_changed_source() -> None:
    failure = permanent_storage_failure(ServerError("server failed with HTTP status code 412", 412))
    assert failure is not None
    assert failure.code == "E_SOURCE_CHANGED"


@pytest.mark.parametrize(
    "error",
    [
        s3_error("InternalError"),
        s3_error("SlowDown"),
        s3_error("ServiceUnavailable"),
        ServerError("server failed with HTTP status code 503", 503),
        MaxRetryError(None, "/incoming/x", "connection refused"),  # type: ignore[arg-type]
        ProtocolError("connection reset"),
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        RuntimeError("anything else"),
    ],
)
def test_server_trouble_and_connection_errors_stay_transient(error: Exception) -> None:
    assert permanent_storage_failure(error) is None
    assert permanent_failure(error, "muxer") is None


def test_the_job_failure_rules_keep_their_other_cases() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    scratch = permanent_failure(full, "splitter")
    assert scratch is not None
    assert scratch.code == "E_SCRATCH_FULL"
    assert permanent_failure(TransientError("db down"), "splitter") is None
    assert permanent_failure(HandedBack("stopping"), "splitter") is None
    bad = InvalidMessage("bad", code="E_X")
    assert permanent_failure(bad, "splitter") is bad
