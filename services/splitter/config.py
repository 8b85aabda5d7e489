"""Splitter settings (environment, with infra/local.env defaults)."""

from __future__ import annotations

from pydantic import Field

from infiniteflow_common.settings import CommonSettings


class SplitterSettings(CommonSettings):
    """How sources are cut into chunks."""

    # Chunks are sized by work: about `chunk_target_s` seconds of engine time each, from pixels ×
    # frames × (multiplier − 1) and the engine's speed (megapixels interpolated per second on the
    # workers: the defaults are this project's 2-core CPU; set your fleet's, e.g. rife=400 on a GPU).
    chunk_target_s: float = Field(default=60.0, gt=0)
    engine_mpix_per_s: dict[str, float] = Field(default_factory=lambda: {"flow": 2.0, "rife": 0.6})
    chunk_min_frames: int = Field(default=8, ge=2)
    # Streaming workers need no more memory for longer chunks; the cap bounds a chunk's retry cost.
    chunk_max_frames: int = Field(default=20_000, ge=2)
    # A fixed number of source frames per chunk instead (each chunk's own frames; inside a scene one
    # more is shared): tests and drills use it to spread a short job over several workers.
    chunk_frames: int | None = Field(default=None, ge=2)
    # The job's encoding when the user chose none (H.264): CRF and preset of libx264.
    x264_preset: str = "medium"
    x264_crf: int = Field(default=16, ge=0, le=51)
    # PySceneDetect ContentDetector threshold and the shortest scene it may report, in frames.
    scene_threshold: float = Field(default=27.0, gt=0)
    scene_min_frames: int = Field(default=8, ge=1)
    # Width of the frames the scene detector sees (downscaled: faster, and noise-robust).
    scene_width: int = Field(default=256, ge=32)
    # With the dedupe option, a frame whose small luma image differs from the last distinct one by
    # less than this mean absolute difference (0–255) is a duplicate and is skipped.
    dedupe_threshold: float = Field(default=1.0, ge=0)
    # Splits run as leased background work (`infiniteflow_common.splits`): at most this many passes
    # side by side in one splitter, each holding a lease renewed every third of `split_lease_s`; a
    # split whose planner died is taken over once its lease ran out, and failed after `split_max_tries`.
    max_concurrent_splits: int = Field(default=2, ge=1)
    split_lease_s: float = Field(default=30.0, gt=0)
    split_max_tries: int = Field(default=2, ge=1)
    # Announce chunks while the pass runs (constant-rate sources without dedupe); off: every chunk
    # after the whole pass, as before issue 23 (benchmarks compare the two).
    stream_chunks: bool = True
    # How often a planner with a free slot looks for split requests (a request from this process
    # wakes it at once).
    split_poll_s: float = Field(default=2.0, gt=0)
    # The splitter's consumer only records requests, so the default poll interval is plenty.
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    # The pass reads the source over a presigned URL (nothing is downloaded): a read that stalls this
    # long fails the split (transient: it is retried); the URL outlives the longest pass (reconnects
    # after a network blip reuse it).
    source_timeout_s: float = Field(default=60.0, gt=0)
    source_url_expiry_s: float = Field(default=6 * 3600.0, ge=60, le=7 * 24 * 3600)
    metrics_port: int | None = 9102
