"""The notifier's metrics. Labels are bounded: event type, outcome, status class — never ids or URLs."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Job events turned into webhook rows: status is pending (will be sent), skipped (no webhook_url)
# or duplicate (a replayed event whose webhook already exists).
WEBHOOKS_STORED = Counter(
    "infiniteflow_webhooks_stored_total",
    "Job events stored as webhook messages, by event type and status (pending, skipped, duplicate).",
    ["event_type", "status"],
)
# Every HTTP attempt; outcome is delivered, retry, rejected or exhausted, and response the status class
# (2xx, 3xx, 4xx, 429, 5xx) or what prevented one (timeout, connect, error).
WEBHOOK_ATTEMPTS = Counter(
    "infiniteflow_webhook_attempts_total",
    "Webhook delivery attempts, by event type, outcome and response class.",
    ["event_type", "outcome", "response"],
)
# Wall time of one attempt, from sending the request to the end of the response (or the failure).
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "infiniteflow_webhook_attempt_seconds",
    "Latency of one webhook delivery attempt, by outcome.",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# The backlog: webhooks not yet delivered, exhausted or skipped (due now or waiting for a retry).
WEBHOOKS_PENDING = Gauge(
    "infiniteflow_webhooks_pending",
    "Webhook messages still pending delivery, across every notifier instance.",
)
# Webhooks given up on and published to their origin topic's DLQ, by error code.
WEBHOOKS_DEAD_LETTERED = Counter(
    "infiniteflow_webhooks_dead_lettered_total",
    "Webhooks published to the DLQ, by code (E_WEBHOOK_EXHAUSTED, E_WEBHOOK_REJECTED).",
    ["code"],
)
