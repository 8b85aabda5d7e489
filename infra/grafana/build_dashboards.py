"""Generates the Grafana dashboards in `dashboards/` (run it after editing; a test checks they match).

`python infra/grafana/build_dashboards.py` rewrites `pipeline-overview.json` and `workers.json`. Plain
dictionaries in Grafana's dashboard JSON model (schemaVersion 39), so no SDK is needed to change a
panel. Every query is written to return series once one job has run: counters are summed by bounded
labels, and failure counters that may never have been incremented fall back to `vector(0)`.
Ingest's monitor gauges (jobs, lag, topic sizes) are exported by every ingest instance: `max`, not `sum`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
WORKER = "* on (instance) group_left (worker) infiniteflow_worker_info"


def target(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    """One PromQL query of a panel."""
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def panel(
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    *,
    kind: str = "timeseries",
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    stack: bool = False,
) -> dict[str, Any]:
    """A panel; `targets` are (expr, legend) pairs. Grid positions are assigned by `dashboard()`."""
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if stack:
        custom |= {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 40}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom if kind == "timeseries" else {}}},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }


def row(title: str) -> dict[str, Any]:
    """A full-width row header; the panels after it, up to the next row, are its."""
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
        "panels": [],
    }


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    """A dashboard with a Prometheus datasource variable; panels flow left to right, top to bottom."""
    x = y = row_height = 0
    for number, item in enumerate(panels, start=1):
        grid = item["gridPos"]
        if x + grid["w"] > 24:
            x, y, row_height = 0, y + row_height, 0
        grid["x"], grid["y"] = x, y
        x, row_height = x + grid["w"], max(row_height, grid["h"])
        item["id"] = number
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["infiniteflow"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "InfiniteFlow Prometheus", "value": "infiniteflow-prometheus"},
                }
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def quantiles(metric: str, by: str = "", legend: str = "") -> list[tuple[str, str]]:
    """p50 and p95 of a histogram, optionally per label."""
    group = f"le, {by}" if by else "le"
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))",
            f"{legend}p{int(q * 100)}",
        )
        for q in (0.5, 0.95)
    ]


def overview() -> dict[str, Any]:
    """Is the pipeline keeping up, how fast are jobs, and is anything failing?"""
    return dashboard(
        "infiniteflow-overview",
        "InfiniteFlow — pipeline overview",
        "Jobs, latency, lag, throughput, dead letters and webhooks of the whole pipeline.",
        [
            panel(
                "Jobs by status",
                "Jobs in each status now, counted in PostgreSQL by ingest every 5 s.",
                [
                    (
                        'max by (status) (infiniteflow_jobs{status!~"completed|completed_with_warnings|failed|cancelled"})',
                        "{{status}}",
                    )
                ],
                stack=True,
                width=8,
            ),
            panel(
                "Jobs per second",
                "Jobs created (uploads and bucket drops) and jobs finishing, by final status.",
                [
                    ("sum(rate(infiniteflow_ingest_jobs_created_total[5m]))", "created"),
                    (
                        'max by (status) (deriv(infiniteflow_jobs{status=~"completed|completed_with_warnings|failed|cancelled"}[5m]))',
                        "{{status}}",
                    ),
                ],
                unit="reqps",
                width=8,
            ),
            panel(
                "Jobs finished",
                "Jobs completed and failed since the database was created.",
                [
                    (
                        'max by (status) (infiniteflow_jobs{status=~"completed|completed_with_warnings|failed|cancelled"})',
                        "{{status}}",
                    )
                ],
                kind="stat",
                width=8,
            ),
            panel(
                "End-to-end latency",
                "Job created → output uploaded, for completed jobs (p50, p95).",
                quantiles("infiniteflow_job_seconds"),
                unit="s",
            ),
            panel(
                "Per-stage latency (p95)",
                "Where completed jobs spend their time (split, interpolate, mux), and the per-unit work "
                "of each service: probe per upload, split per job, interpolation per chunk, mux per job.",
                [
                    (
                        f"histogram_quantile(0.95, sum by (le, stage) (rate(infiniteflow_job_stage_seconds_bucket[{RATE}])))",
                        "job {{stage}}",
                    ),
                    (
                        f"histogram_quantile(0.95, sum by (le) (rate(infiniteflow_ingest_probe_seconds_bucket[{RATE}])))",
                        "probe",
                    ),
                    (
                        f"histogram_quantile(0.95, sum by (le) (rate(infiniteflow_split_seconds_bucket[{RATE}])))",
                        "split",
                    ),
                    (
                        f"histogram_quantile(0.95, sum by (le) (rate(infiniteflow_chunk_seconds_bucket[{RATE}])))",
                        "chunk",
                    ),
                    (
                        f"histogram_quantile(0.95, sum by (le) (rate(infiniteflow_mux_seconds_bucket[{RATE}])))",
                        "mux",
                    ),
                ],
                unit="s",
            ),
            panel(
                "Consumer lag",
                "Messages each consumer group has not committed yet, per topic.",
                [("max by (group, topic) (infiniteflow_consumer_lag)", "{{group}} ← {{topic}}")],
            ),
            panel(
                "Interpolated frames per second, per worker",
                "Output frames written by each gpu_interp worker.",
                [
                    (
                        f"sum by (worker) (rate(infiniteflow_interpolated_frames_total[{RATE}]) {WORKER})",
                        "{{worker}}",
                    )
                ],
                unit="fps",
            ),
            panel(
                "Dead-letter queues",
                "Messages retained in each DLQ topic, and messages dead-lettered in the last hour.",
                [
                    ('max by (topic) (infiniteflow_topic_messages{topic=~".+\\\\.dlq"})', "{{topic}}"),
                    (
                        "sum by (topic, code) (increase(infiniteflow_dlq_messages_total[1h])) or vector(0)",
                        "new: {{topic}} {{code}}",
                    ),
                ],
                width=8,
            ),
            panel(
                "Messages by outcome",
                "What consumers did with each message: ok, retried, dlq, skipped.",
                [
                    (
                        f"sum by (service, outcome) (rate(infiniteflow_messages_total[{RATE}]))",
                        "{{service}} {{outcome}}",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            panel(
                "Failures by error code (last hour)",
                "FFmpeg/libav failures per service and code, and uploads refused at ingest "
                "(E_PROBE_* are probe failures).",
                [
                    (
                        "sum by (service, code) (increase(infiniteflow_ffmpeg_failures_total[1h])) or vector(0)",
                        "{{service}} {{code}}",
                    ),
                    (
                        "sum by (code) (increase(infiniteflow_ingest_jobs_rejected_total[1h])) or vector(0)",
                        "ingest {{code}}",
                    ),
                ],
                width=8,
            ),
            panel(
                "Webhook success",
                "Share of webhook delivery attempts delivered in the last hour.",
                [
                    (
                        'sum(increase(infiniteflow_webhook_attempts_total{outcome="delivered"}[1h]))'
                        " / sum(increase(infiniteflow_webhook_attempts_total[1h]))",
                        "delivered",
                    )
                ],
                kind="stat",
                unit="percentunit",
                width=6,
            ),
            panel(
                "Webhook attempts by outcome",
                "Delivered, retry (will be tried again), rejected (4xx), exhausted.",
                [
                    (
                        f"sum by (outcome, response) (rate(infiniteflow_webhook_attempts_total[{RATE}]))",
                        "{{outcome}} {{response}}",
                    )
                ],
                unit="reqps",
                width=9,
            ),
            panel(
                "Webhook latency",
                "Duration of one delivery attempt (p50, p95).",
                quantiles("infiniteflow_webhook_attempt_seconds"),
                unit="s",
                width=9,
            ),
        ],
    )


def workers() -> dict[str, Any]:
    """How the gpu_interp workers are doing: alive, busy, fast, and their GPUs."""
    service = 'service="gpu_interp"'
    return dashboard(
        "infiniteflow-workers",
        "InfiniteFlow — workers",
        "The gpu_interp workers: liveness, utilisation, throughput, chunk times, and GPU memory.",
        [
            panel(
                "Workers alive",
                "gpu_interp processes answering their /metrics endpoint.",
                [(f"count(up{{{service}}} == 1)", "alive")],
                kind="stat",
                width=6,
            ),
            panel(
                "chunk.ready backlog",
                "Chunks waiting for a worker (lag of the gpu_interp group).",
                [('max(infiniteflow_consumer_lag{group="gpu_interp"})', "backlog")],
                kind="stat",
                width=6,
            ),
            panel(
                "Busy workers",
                "Share of time each worker was interpolating (5-minute average).",
                [
                    (f"max by (worker) (avg_over_time(infiniteflow_worker_busy[5m]) {WORKER})", "{{worker}}"),
                ],
                unit="percentunit",
                width=12,
            ),
            panel(
                "Frames per second, per worker",
                "Interpolated output frames written per second.",
                [
                    (
                        f"sum by (worker) (rate(infiniteflow_interpolated_frames_total[{RATE}]) {WORKER})",
                        "{{worker}}",
                    )
                ],
                unit="fps",
            ),
            panel(
                "Chunk time by engine",
                "Engine seconds per chunk (decode + inference + encode), p50 and p95.",
                quantiles("infiniteflow_chunk_seconds", by="engine", legend="{{engine}} "),
                unit="s",
            ),
            panel(
                "Chunks per worker (last hour)",
                "Chunks finished (done) and results discarded because another worker took the lease over (fenced).",
                [
                    (
                        f"sum by (worker, outcome) (increase(infiniteflow_worker_chunks_total[1h]) {WORKER})",
                        "{{worker}} {{outcome}}",
                    )
                ],
            ),
            panel(
                "Handler time per chunk.ready message",
                "Whole message handling in a worker (claim, transfers, interpolation, publish), p95.",
                [
                    (
                        f"histogram_quantile(0.95, sum by (le) (rate(infiniteflow_handler_seconds_bucket{{{service}}}[{RATE}])))",
                        "p95",
                    )
                ],
                unit="s",
            ),
            panel(
                "Worker memory and CPU",
                "Resident memory and CPU cores used by each worker process.",
                [
                    (f"max by (pid) (process_resident_memory_bytes{{{service}}})", "rss {{pid}}"),
                    (f"max by (pid) (rate(process_cpu_seconds_total{{{service}}}[{RATE}]))", "cpu {{pid}}"),
                ],
                unit="bytes",
            ),
            panel(
                "GPU memory",
                "Device memory in use and total, and what each worker's tensors hold (CUDA workers only).",
                [
                    (
                        "max by (instance, gpu) (infiniteflow_gpu_memory_used_bytes)",
                        "used {{instance}} gpu{{gpu}}",
                    ),
                    (
                        "max by (instance, gpu) (infiniteflow_gpu_memory_total_bytes)",
                        "total {{instance}} gpu{{gpu}}",
                    ),
                    (
                        f"max by (worker, gpu) (infiniteflow_gpu_memory_allocated_bytes {WORKER})",
                        "tensors {{worker}} gpu{{gpu}}",
                    ),
                ],
                unit="bytes",
            ),
            panel(
                "GPU utilisation",
                "Share of time the GPU was busy, from NVML (CUDA workers only).",
                [("max by (instance, gpu) (infiniteflow_gpu_utilization_ratio)", "{{instance}} gpu{{gpu}}")],
                unit="percentunit",
            ),
            row("Fair dispatch"),
            panel(
                "Queued work per tenant",
                "Estimated worker seconds of the chunks waiting for a worker, per tenant (ingest's "
                "monitor: the engines' speed measured on the last hour's chunks, else configured).",
                [("max by (tenant) (infiniteflow_tenant_queued_work_seconds)", "{{tenant}}")],
                unit="s",
                stack=True,
                width=8,
            ),
            panel(
                "Chunks waiting and running per tenant",
                "Chunks waiting for a worker, and chunks a worker holds a live lease on, per tenant.",
                [
                    ("max by (tenant) (infiniteflow_tenant_queued_chunks)", "waiting {{tenant}}"),
                    ("max by (tenant) (infiniteflow_tenant_running_chunks)", "running {{tenant}}"),
                ],
                width=8,
            ),
            panel(
                "Dispatch wait",
                "Seconds from a chunk's planning to its first claim by a worker (p50, p95).",
                quantiles("infiniteflow_dispatch_wait_seconds"),
                unit="s",
                width=8,
            ),
            panel(
                "Claims by kind",
                "What each chunk.ready record led a worker to claim: its own chunk, another chunk of its "
                "job, another job's chunk (the fairest), or nothing (every chunk still to do is held); "
                "`preempting`: a chunk run in a pause of the chunk in hand.",
                [
                    (
                        f"sum by (claimed) (rate(infiniteflow_dispatch_claims_total[{RATE}]))",
                        "{{claimed}}",
                    )
                ],
                unit="reqps",
                stack=True,
                width=12,
            ),
            panel(
                "Chunk pauses (preemption)",
                "Seconds a chunk in hand stood paused while chunks owed a worker ran first (p50, p95), "
                "one observation per pause.",
                quantiles("infiniteflow_chunk_pause_seconds"),
                unit="s",
                width=12,
            ),
        ],
    )


DASHBOARDS = {"pipeline-overview.json": overview, "workers.json": workers}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    """Write the dashboards; with `--check`, only report (exit 1) when a file is out of date."""
    stale = []
    for name, text in render().items():
        path = OUT / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if "--check" not in sys.argv:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(("out of date: " if "--check" in sys.argv else "wrote: ") + ", ".join(stale))
    return 1 if stale and "--check" in sys.argv else 0


if __name__ == "__main__":
    raise SystemExit(main())
