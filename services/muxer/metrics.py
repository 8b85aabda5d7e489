"""Muxer metrics (bounded labels). The muxer sees every completed job, so job latencies are observed here."""

from prometheus_client import Counter, Histogram

_JOB_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

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
# Quality self-check score of completed jobs: mean PSNR (dB) of real frames re-created from neighbours.
JOB_QUALITY_PSNR = Histogram(
    "infiniteflow_job_quality_psnr_db",
    "Self-check PSNR (dB) of completed jobs (mean over their checked chunks).",
    buckets=(10, 15, 20, 22, 25, 28, 30, 33, 36, 40, 50),
)
# End-to-end latency of a completed job: job row created (upload seen) → output uploaded.
JOB_SECONDS = Histogram(
    "infiniteflow_job_seconds", "Seconds from job creation to completion.", buckets=_JOB_BUCKETS
)
# Where a completed job's time went: split (created → split done, queueing included), interpolate
# (split done → every chunk in), mux (every chunk in → output uploaded).
JOB_STAGE_SECONDS = Histogram(
    "infiniteflow_job_stage_seconds",
    "Seconds a completed job spent in each stage (split, interpolate, mux).",
    ["stage"],
    buckets=_JOB_BUCKETS,
)
for _stage in ("split", "interpolate", "mux"):
    JOB_STAGE_SECONDS.labels(_stage)  # the series exist (at zero) before the first job completes
# Assembly claims: claimed (this muxer assembles the job), held_elsewhere (another replica does).
ASSEMBLY_CLAIMS = Counter(
    "infiniteflow_assembly_claims_total", "Job assembly claims by outcome.", ["outcome"]
)
for _outcome in ("claimed", "held_elsewhere"):
    ASSEMBLY_CLAIMS.labels(_outcome)
# Work objects (encoded chunks) deleted when their job ended.
WORK_OBJECTS_DELETED = Counter(
    "infiniteflow_work_objects_deleted_total", "Work-bucket objects deleted when their job ended."
)
# Chunks planned again because their encoded output was gone from the work bucket before assembly
# (a job that outlived the bucket's lifecycle rule): each costs a chunk of engine time again.
CHUNKS_REDONE = Counter(
    "infiniteflow_chunks_redone_total", "Chunks made again because their output was lost before assembly."
)
