"""The retry schedule: about a day in all, jittered, and bounded by the receiver's Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from services.notifier.config import DEFAULT_RETRY_SCHEDULE_S, NotifierSettings
from services.notifier.schedule import RetryPolicy, parse_retry_after

NOW = datetime(2026, 11, 24, 0, 0, 0, tzinfo=UTC)


def test_the_default_schedule_spans_about_a_day_and_grows() -> None:
    assert 20 * 3600 <= sum(DEFAULT_RETRY_SCHEDULE_S) <= 30 * 3600
    assert list(DEFAULT_RETRY_SCHEDULE_S) == sorted(DEFAULT_RETRY_SCHEDULE_S)
    assert RetryPolicy(DEFAULT_RETRY_SCHEDULE_S).max_attempts == 8


def test_without_jitter_the_delays_are_the_schedule_and_then_none() -> None:
    policy = RetryPolicy(schedule=(1.0, 2.0, 4.0), jitter_ratio=0.0)
    assert [policy.next_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, None]


def test_jitter_stays_within_its_ratio_and_spreads_retries() -> None:
    policy = RetryPolicy(schedule=(100.0,), jitter_ratio=0.2)
    rng = random.Random(7)
    delays = [policy.next_delay(1, rng=rng) for _ in range(500)]
    assert all(d is not None and 80.0 <= d <= 120.0 for d in delays)
    assert len({round(d or 0, 3) for d in delays}) > 400


def test_an_empty_schedule_means_one_attempt() -> None:
    policy = RetryPolicy(schedule=())
    assert policy.max_attempts == 1
    assert policy.next_delay(1) is None


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        RetryPolicy(schedule=(1.0,)).next_delay(0)


def test_retry_after_is_a_floor_up_to_its_cap() -> None:
    policy = RetryPolicy(schedule=(5.0,), jitter_ratio=0.0, retry_after_max_s=60.0)
    assert policy.next_delay(1, retry_after_s=30.0) == 30.0
    assert policy.next_delay(1, retry_after_s=1.0) == 5.0
    assert policy.next_delay(1, retry_after_s=3600.0) == 60.0
    assert policy.next_delay(2, retry_after_s=30.0) is None, "Retry-After cannot extend the schedule"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Tue, 24 Nov 2026 00:01:30 GMT", 90.0),
        ("Mon, 23 Nov 2026 23:00:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
    ],
)
def test_retry_after_headers_parse_as_seconds_or_dates(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_the_schedule_and_poll_interval_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE_S", "[0.1, 0.5, 2]")
    monkeypatch.setenv("WEBHOOK_POLL_INTERVAL_S", "0.05")
    monkeypatch.setenv("WEBHOOK_TIMEOUT_S", "3")
    settings = NotifierSettings()
    assert settings.webhook_retry_schedule_s == (0.1, 0.5, 2.0)
    assert settings.webhook_poll_interval_s == 0.05
    assert settings.webhook_timeout_s == 3.0


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        NotifierSettings(webhook_retry_schedule_s=(5.0, -1.0))


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not base64!"])
def test_a_missing_or_malformed_secret_is_refused_without_echoing_it(secret: str) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_SECRET") as info:
        NotifierSettings(webhook_secret=secret)
    if secret.removeprefix("whsec_"):
        assert secret not in str(info.value)
