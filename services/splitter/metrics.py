"""Splitter metrics (no job ids as labels)."""

from prometheus_client import Counter, Gauge, Histogram

# Wall time of one job's split: download, the pass, and every chunk announced.
SPLIT_SECONDS = Histogram(
    "infiniteflow_split_seconds",
    "Seconds the splitter spent on one job.",
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600),
)
# From a split's start to its first chunks announced while the pass still runs.
FIRST_CHUNK_SECONDS = Histogram(
    "infiniteflow_split_first_chunk_seconds",
    "Seconds from a split's start to its first chunk announced while the pass runs.",
    buckets=(0.5, 1, 2, 5, 10, 20, 60, 300),
)
# Chunks recorded and announced.
CHUNKS_PLANNED = Counter("infiniteflow_chunks_planned_total", "Chunks the splitter planned and announced.")
SPLITS_RUNNING = Gauge("infiniteflow_splits_running", "Splits this splitter is running now.")
