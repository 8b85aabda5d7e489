"""Splitter metrics (no job ids as labels)."""

from prometheus_client import Counter, Histogram

# Wall time to download, analyse, cut and upload one job's chunks.
SPLIT_SECONDS = Histogram(
    "infiniteflow_split_seconds",
    "Seconds the splitter spent on one job.",
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 900),
)
# Chunks written to the work bucket.
CHUNKS_PLANNED = Counter("infiniteflow_chunks_planned_total", "Chunks the splitter wrote and announced.")
