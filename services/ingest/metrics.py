"""Ingest's Prometheus metrics. Labels are bounded: source, error code, route template, status class."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# New job rows, by how the object reached us (bucket, api, sweeper); replays do not count.
JOBS_CREATED = Counter("infiniteflow_ingest_jobs_created_total", "Jobs created, by source.", ["source"])
# Jobs ingest refused, by stable error code (E_PROBE_*, E_PARAM_INVALID, E_UPLOAD_TOO_LARGE, E_SOURCE_*).
JOBS_REJECTED = Counter(
    "infiniteflow_ingest_jobs_rejected_total", "Jobs failed at ingest, by error code.", ["code"]
)
# Jobs handed to the splitter (VideoUploaded published).
JOBS_STARTED = Counter(
    "infiniteflow_ingest_jobs_started_total", "VideoUploaded events published.", ["source"]
)
# Start attempts that found the job already handled (MinIO repeats, Kafka replays, API + event races).
REPLAYS = Counter(
    "infiniteflow_ingest_replays_total", "Start attempts on an already handled job.", ["source"]
)
# Time spent in the safe probe (all ffprobe runs of one file).
PROBE_SECONDS = Histogram(
    "infiniteflow_ingest_probe_seconds",
    "Wall time of probing one upload.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
# Bytes received through POST /api/upload (accepted or not).
UPLOAD_BYTES = Counter("infiniteflow_ingest_upload_bytes_total", "Bytes received by the upload API.")
# Bytes downloaded from the bucket for probing.
DOWNLOAD_BYTES = Counter("infiniteflow_ingest_download_bytes_total", "Bytes read from the bucket to probe.")
# HTTP API requests, by route template (not the raw path: ids would explode the label set) and status.
API_REQUESTS = Counter(
    "infiniteflow_ingest_api_requests_total", "HTTP API requests, by route and status.", ["route", "status"]
)
# Orphaned objects the sweeper started (their MinIO event was lost), and sweeps that failed.
SWEPT = Counter("infiniteflow_ingest_swept_total", "Objects the sweeper started, by outcome.", ["outcome"])

# The following are refreshed by services/ingest/pipeline_gauges.py from PostgreSQL and Kafka, not by events.
# Every ingest instance exports the same values: aggregate them with max, not sum.
# Jobs in each status right now (pending, splitting, interpolating, muxing, completed, failed).
JOBS = Gauge("infiniteflow_jobs", "Jobs per status, counted in PostgreSQL.", ["status"])
# Messages a pipeline consumer group has not yet committed, per topic (summed over partitions).
CONSUMER_LAG = Gauge(
    "infiniteflow_consumer_lag", "Uncommitted messages per consumer group and topic.", ["group", "topic"]
)
# Messages retained in each pipeline topic and its DLQ twin (high minus low watermark, all partitions).
TOPIC_MESSAGES = Gauge("infiniteflow_topic_messages", "Messages retained per topic.", ["topic"])
# Fair dispatch's queues per tenant (its id, or "anonymous" for jobs without one; every tenant from the
# first scrape): chunks waiting for a worker (pending, or leased by a worker whose lease ran out), their
# estimated worker seconds (infiniteflow_common.queue: the engines' measured or configured speed), and
# chunks running now.
TENANT_QUEUED_CHUNKS = Gauge(
    "infiniteflow_tenant_queued_chunks", "Chunks waiting for a worker, per tenant.", ["tenant"]
)
TENANT_QUEUED_WORK = Gauge(
    "infiniteflow_tenant_queued_work_seconds",
    "Estimated worker seconds of the chunks waiting, per tenant.",
    ["tenant"],
)
TENANT_RUNNING_CHUNKS = Gauge(
    "infiniteflow_tenant_running_chunks", "Chunks a worker holds a live lease on, per tenant.", ["tenant"]
)
# Monitor refreshes that failed (jobs and queues: PostgreSQL, lag: Kafka); the gauges keep their values.
MONITOR_ERRORS = Counter(
    "infiniteflow_monitor_errors_total", "Failed refreshes of the pipeline gauges.", ["part"]
)
# API requests refused with 429 (a tenant over its rate limit); tenant ids are unbounded, so no label.
RATE_LIMITED = Counter(
    "infiniteflow_ingest_rate_limited_total", "API requests refused for a tenant's rate limit."
)
# Jobs a user cancelled through the API (counted once per job, not per repeated request).
JOBS_CANCELLED = Counter("infiniteflow_ingest_jobs_cancelled_total", "Jobs cancelled through the API.")
