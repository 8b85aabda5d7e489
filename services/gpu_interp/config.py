"""gpu_interp worker settings (environment, with infra/local.env defaults)."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from infiniteflow_common.settings import CommonSettings

PROCESS_TOKEN = secrets.token_hex(4)
"""Drawn once per process start: part of the worker's identity, so a restarted process is a new worker."""


class WorkerSettings(CommonSettings):
    """How a worker claims and interpolates chunks."""

    # WORKER_ID names the worker (default: hostname-pid); its identity is that name plus a token drawn
    # at each process start. A restarted container (same hostname, often the same pid, the same
    # WORKER_ID) is thus a new worker: it cannot take its dead predecessor's lease as its own, and the
    # predecessor's try counts as lost (the poison-chunk rule).
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", validate_default=True
    )
    # A claimed chunk is this worker's for `lease_seconds`, renewed every third of it while it works.
    lease_seconds: float = Field(default=60.0, gt=1)
    # DISPATCH=fair: a chunk.ready record lets the worker claim the fairest chunk across every running
    # job and tenant (`infiniteflow_common.dispatch`); `record`: only the record's own chunk, first come
    # first served (the behaviour before fair dispatch, kept for comparison benchmarks).
    dispatch: Literal["fair", "record"] = "fair"
    # Preemption at batch boundaries (fair dispatch only): every `preempt_check_s` between batches, a
    # worker asks whether a waiting chunk is owed a worker before its own chunk's job (a job with none
    # running while this one has several, a tenant with less of the fleet, a higher priority); if so it
    # pauses its chunk, runs that one, and resumes. False: a chunk in hand always runs to its end.
    preempt: bool = True
    preempt_check_s: float = Field(default=1.0, gt=0)
    # How often a worker asks whether the job of the chunk in hand was cancelled (it stops at the next batch).
    cancel_poll_s: float = Field(default=2.0, gt=0)
    # Chunk work runs inside the handler; this bounds it (chunks are kept short by the splitter).
    max_poll_interval_ms: int = Field(default=1_800_000, ge=60_000)
    batch_size: int = Field(default=4, ge=1)
    # Quality self-check: re-created frames may cost at most this share of a chunk's own pair
    # interpolations (0.04 keeps it under 5 % of the chunk's time), and at most this many frames.
    quality_budget: float = Field(default=0.04, ge=0, le=1)
    quality_samples: int = Field(default=3, ge=0)
    # Out of memory, a chunk is retried at lower flow scales down to this one, then with smaller batches.
    min_scale: float = Field(default=0.25, gt=0, le=1)
    # Poison chunks: after this many attempts whose workers died or ran out their lease (an OOM kill
    # never reaches the in-process step-down), a chunk is tried once more at `min_scale` with one pair
    # per call; if that one is lost too, its job fails with E_CHUNK_POISON.
    chunk_max_attempts: int = Field(default=3, ge=1)
    # Memory a worker may use (its process plus its encoder), planned per chunk before decoding
    # (`memory_plan`). None: MEMORY_SHARE of the cgroup's limit (else of the machine's memory) divided
    # by the workers sharing it (LOCAL_WORKERS, which `infiniteflow services up` sets).
    worker_memory_bytes: int | None = Field(default=None, ge=1)
    local_workers: int = Field(default=1, ge=1)
    memory_share: float = Field(default=0.8, gt=0, le=1)
    # Drills and tests: pretend memory runs out above this many pairs × pixels × scale² per engine call.
    simulated_memory_pixels: int | None = Field(default=None, ge=1)
    device: str | None = None
    rife_scale: float | None = None
    # How the rife network runs: auto (OpenVINO on CPU workers, 1.2–1.4× eager here; eager on CUDA),
    # eager, compile (torch.compile) or openvino. The compiling backends pay about a minute per new
    # frame size once; their artifacts are kept in `compile_cache_dir` for the next worker process.
    rife_backend: Literal["auto", "eager", "compile", "openvino"] = "auto"
    rife_compile: bool = False  # older switch, kept: true means RIFE_BACKEND=compile
    # Compiled kernels and converted models (inductor's FX-graph cache, OpenVINO IR and blobs),
    # keyed by weights, frame size and library versions; None: torch's per-process temp default.
    compile_cache_dir: Path | None = Path.home() / ".cache" / "infiniteflow" / "compile"
    # CPU threads of one engine (None: every core this process may use). Several CPU workers on one
    # machine each want cores / workers, or they fight over the same cores.
    engine_threads: int | None = Field(default=None, ge=1)
    weights_path: str | None = None
    weights_sha256: str | None = None
    v425_weights_path: str | None = None
    v425_weights_sha256: str | None = None
    # model=auto: the choice and the self-check together (the chosen model's check is the self-check)
    # may cost at most this share of a chunk's engine work; a chunk too short for that gets the rule.
    model_choice_budget: float = Field(default=0.06, ge=0, le=1)
    scratch_dir: Path = Path(tempfile.gettempdir()) / "infiniteflow" / "gpu_interp"
    # A source read that stalls this long fails the attempt (transient: the chunk is retried).
    source_timeout_s: float = Field(default=60.0, gt=0)
    # FFmpeg finishing a chunk's encode after its last frame.
    encode_timeout_s: float = Field(default=600.0, gt=0)
    metrics_port: int | None = 9103
    # A worker told to stop finishes its chunk within this, or hands it back (pods: below the
    # termination grace period).
    shutdown_grace_s: float = Field(default=90.0, gt=0)

    @field_validator("worker_id")
    @classmethod
    def _unique_per_process(cls, name: str) -> str:
        return name if name.endswith(f"-{PROCESS_TOKEN}") else f"{name}-{PROCESS_TOKEN}"


def default_memory_budget(settings: WorkerSettings) -> int:
    """The worker's memory budget: WORKER_MEMORY_BYTES, else MEMORY_SHARE of its cgroup's limit (or of
    the machine's memory where none is set) divided by LOCAL_WORKERS.

    The workers on one machine (or in one container) share its memory with each other and with
    everything else there, hence the share; a pod per worker leaves LOCAL_WORKERS at 1.
    """
    from services.gpu_interp.process_memory import cgroup_limit_bytes, machine_memory_bytes

    if settings.worker_memory_bytes is not None:
        return settings.worker_memory_bytes
    limit = cgroup_limit_bytes()
    whole = min(limit, machine_memory_bytes()) if limit is not None else machine_memory_bytes()
    return int(whole * settings.memory_share / settings.local_workers)
