"""Muxer metrics (bounded labels)."""

from prometheus_client import Counter, Histogram

# Chunk results by what happened to them: recorded (counted), replayed (seen before), fenced (stale epoch).
CHUNK_RESULTS = Counter(
    "infiniteflow_chunk_results_total", "chunk.interpolated records by outcome.", ["outcome"]
)
# Download, final encode and upload of one job's output.
MUX_SECONDS = Histogram(
    "infiniteflow_mux_seconds",
    "Seconds the muxer spent assembling one job.",
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 900),
)
