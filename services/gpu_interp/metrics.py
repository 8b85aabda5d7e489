"""gpu_interp worker metrics (bounded labels: engine, outcome, GPU index, the worker's own id)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Chunks finished by outcome: done, fenced (another worker took over; result discarded), handed_back,
# cancelled, or poison (every attempt killed its worker; the job failed with E_CHUNK_POISON).
CHUNKS = Counter("infiniteflow_worker_chunks_total", "Chunks a worker finished, by outcome.", ["outcome"])
# Claims that found the chunk's earlier tries lost (worker died or ran out its lease), by the plan for
# this try: normal (retry), conservative (once at the lightest settings), poison (the job fails).
LOST_ATTEMPTS = Counter(
    "infiniteflow_chunk_lost_attempts_total",
    "Chunk claims after tries whose worker died or timed out, by the poison-chunk rule's plan.",
    ["plan"],
)
# Fair dispatch (`infiniteflow_common.dispatch`): how long a chunk waited from its planning to its
# first claim, and what each `chunk.ready` record led to: its own chunk, another job's or chunk
# (the fairest one), or nothing (every chunk still to do is held by a live worker).
DISPATCH_WAIT = Histogram(
    "infiniteflow_dispatch_wait_seconds",
    "Seconds from a chunk's planning to its first claim by a worker.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
DISPATCHED = Counter(
    "infiniteflow_dispatch_claims_total",
    "What a chunk.ready record led the worker to claim: own, other_chunk, other_job or none.",
    ["claimed"],
)
PREEMPTIONS = Counter(
    "infiniteflow_chunk_preemptions_total",
    "Chunks run in a pause of a chunk in hand, at a batch boundary, because their job was owed a worker.",
)
PAUSE_SECONDS = Histogram(
    "infiniteflow_chunk_pause_seconds",
    "Seconds a chunk in hand stood paused while chunks owed a worker ran (one observation per pause).",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
# Engine time per chunk (decode + inference + lossless encode), without transfers.
CHUNK_SECONDS = Histogram(
    "infiniteflow_chunk_seconds",
    "Seconds of interpolation work per chunk.",
    ["engine"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
# Quality self-check score of a chunk: PSNR of real frames re-created from their neighbours.
QUALITY_PSNR = Histogram(
    "infiniteflow_chunk_quality_psnr_db",
    "Self-check PSNR (dB) of checked chunks.",
    ["engine"],
    buckets=(10, 15, 20, 22, 25, 28, 30, 33, 36, 40, 50),
)
# Self-check seconds divided by the chunk's own interpolation seconds (the budget keeps it under 0.05).
QUALITY_COST = Histogram(
    "infiniteflow_quality_check_cost_ratio",
    "Self-check time as a share of the chunk's interpolation time.",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.2),
)
# Choice of model (auto) and self-check together, as a share of the chunk's time; budget 6 % (auto) / 4 %.
CHECK_SHARE = Histogram(
    "infiniteflow_chunk_check_share",
    "Model choice and quality self-check time as a share of the chunk's time.",
    ["engine"],
    buckets=(0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.2, 0.5),
)
# Chunks by the RIFE model that interpolated them and how it was picked: "job" (named by the job),
# "check" (auto: the better score on the chunk's own re-created frames), "rule" (auto, chunk too short).
MODEL_CHOICES = Counter(
    "infiniteflow_chunk_model_total",
    "Chunks interpolated by each RIFE model, by how the model was chosen.",
    ["model", "chosen_by"],
)
# auto's check: PSNR of the chosen model minus the best other candidate's (dB, >= 0); how clear choices are.
MODEL_CHOICE_MARGIN = Histogram(
    "infiniteflow_model_choice_margin_db",
    "Score margin of auto's model choice over the runner-up (dB).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
)
# Out-of-memory retries of a chunk at a lighter step (lower scale, then smaller batch).
OOM_RETRIES = Counter(
    "infiniteflow_chunk_oom_retries_total", "Chunk retries after running out of memory.", ["engine"]
)
# Memory planned before a chunk starts (`memory_plan`): the worker's budget, and per chunk the whole
# worker's estimated peak against the peak measured (the process's VmHWM since the chunk started plus
# its encoder's), both also as the last chunk's gauges; plans by outcome: as_configured, lighter (the
# budget chose a lower scale or fewer pairs per call), too_large (the job failed at once).
_MEMORY_BUCKETS = tuple(
    float(gib * (1 << 30)) for gib in (0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
)
MEMORY_BUDGET = Gauge(
    "infiniteflow_worker_memory_budget_bytes", "Memory this worker plans its chunks within."
)
MEMORY_ESTIMATE = Histogram(
    "infiniteflow_chunk_memory_estimate_bytes",
    "Estimated peak memory of a chunk's plan (worker process and encoder).",
    ["engine"],
    buckets=_MEMORY_BUCKETS,
)
PEAK_RSS = Histogram(
    "infiniteflow_chunk_peak_rss_bytes",
    "Measured peak resident memory while a chunk ran (worker process and encoder).",
    ["engine"],
    buckets=_MEMORY_BUCKETS,
)
LAST_MEMORY_ESTIMATE = Gauge(
    "infiniteflow_worker_last_memory_estimate_bytes", "The last chunk's estimated peak memory."
)
LAST_PEAK_RSS = Gauge("infiniteflow_worker_last_peak_rss_bytes", "The last chunk's measured peak memory.")
MEMORY_PLANS = Counter(
    "infiniteflow_chunk_memory_plans_total",
    "Chunk memory plans by outcome: as_configured, lighter, tiled (lighter, and each pair in tiles) or too_large.",
    ["plan"],
)
# Output frames written by the engine; rate() of it is frames/s per worker.
FRAMES = Counter("infiniteflow_interpolated_frames_total", "Output frames written by a worker.", ["engine"])
# Chunks this worker is interpolating right now (0 idle, 1 busy); its average over time is utilisation.
BUSY = Gauge("infiniteflow_worker_busy", "Chunks being interpolated by this worker now.")
# Who this worker is: its id and configured device (one series per worker process).
WORKER = Info("infiniteflow_worker", "This worker's id and device.")

for _outcome in ("done", "fenced", "poison"):
    CHUNKS.labels(_outcome)  # the series exist (at zero) before the first chunk


class GpuCollector(Collector):
    """GPU memory (and utilisation where NVML answers) of every visible CUDA device, at scrape time.

    Reads torch only when the worker has already imported it and CUDA is available, so a CPU-only
    worker exports nothing and a scrape never initialises CUDA by itself.
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        torch = sys.modules.get("torch")
        # `cuda` is missing while another thread is still importing torch
        cuda = getattr(torch, "cuda", None)
        if cuda is None or not cuda.is_available() or not cuda.is_initialized():
            return
        used = GaugeMetricFamily(
            "infiniteflow_gpu_memory_used_bytes", "Device memory in use (all processes).", labels=["gpu"]
        )
        total = GaugeMetricFamily("infiniteflow_gpu_memory_total_bytes", "Device memory.", labels=["gpu"])
        allocated = GaugeMetricFamily(
            "infiniteflow_gpu_memory_allocated_bytes",
            "Device memory held by this worker's tensors.",
            labels=["gpu"],
        )
        utilisation = GaugeMetricFamily(
            "infiniteflow_gpu_utilization_ratio",
            "Share of the last sample period the GPU was busy (needs NVML).",
            labels=["gpu"],
        )
        for index in range(cuda.device_count()):
            free, size = cuda.mem_get_info(index)
            used.add_metric([str(index)], float(size - free))
            total.add_metric([str(index)], float(size))
            allocated.add_metric([str(index)], float(cuda.memory_allocated(index)))
            try:
                utilisation.add_metric([str(index)], cuda.utilization(index) / 100.0)
            except Exception:  # noqa: S112 - NVML missing: utilisation is optional
                continue
        yield used
        yield total
        yield allocated
        if utilisation.samples:
            yield utilisation


_gpu_registered: list[CollectorRegistry] = []


def register_worker(worker_id: str, device: str | None, registry: CollectorRegistry = REGISTRY) -> None:
    """Label this process's metrics with its worker id and export GPU gauges when CUDA is in use."""
    WORKER.info({"worker": worker_id, "device": device or "auto"})
    if registry not in _gpu_registered:
        registry.register(GpuCollector())
        _gpu_registered.append(registry)
