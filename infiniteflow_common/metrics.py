"""Metrics of the shared consumer machinery. Labels are bounded: service, topic, outcome, code."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES_CONSUMED = Counter(
    "infiniteflow_messages_total",
    "Messages a consumer finished with, by outcome (ok, dlq, retried, skipped).",
    ["service", "topic", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "infiniteflow_handler_seconds",
    "Time a handler spent on one message, successful or not.",
    ["service", "topic"],
    buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DLQ_MESSAGES = Counter(
    "infiniteflow_dlq_messages_total",
    "Messages sent to a DLQ, by origin topic and error code.",
    ["service", "topic", "code"],
)
BAD_SOURCE_EVENTS = Counter(
    "infiniteflow_source_events_ignored_total",
    "MinIO notifications not turned into jobs, by reason (malformed, other_bucket, test_event, not_created).",
    ["reason"],
)
DLQ_BREAKER_TRIPS = Counter(
    "infiniteflow_dlq_breaker_trips_total",
    "Times the DLQ circuit breaker stopped a consumer because most recent messages were invalid.",
    ["service", "topic"],
)
# FFmpeg/libav work that failed, by the service that ran it and the stable error code (E_MUX_*, E_MEDIA_*).
# Ingest's probe failures are counted by infiniteflow_ingest_jobs_rejected_total{code=~"E_PROBE_.*"}.
FFMPEG_FAILURES = Counter(
    "infiniteflow_ffmpeg_failures_total",
    "FFmpeg/libav failures (decode, encode, mux), by service and error code.",
    ["service", "code"],
)
