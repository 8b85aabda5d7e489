"""gpu_interp worker metrics (bounded labels: engine, outcome)."""

from prometheus_client import Counter, Histogram

# Chunks finished by outcome: done, or fenced (another worker took over; result discarded).
CHUNKS = Counter("infiniteflow_worker_chunks_total", "Chunks a worker finished, by outcome.", ["outcome"])
# Engine time per chunk (decode + inference + lossless encode), without transfers.
CHUNK_SECONDS = Histogram(
    "infiniteflow_chunk_seconds",
    "Seconds of interpolation work per chunk.",
    ["engine"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
# Output frames written by the engine; rate() of it is frames/s per worker.
FRAMES = Counter("infiniteflow_interpolated_frames_total", "Output frames written by a worker.", ["engine"])
