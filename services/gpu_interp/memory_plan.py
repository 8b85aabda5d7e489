"""A chunk's memory, planned before anything is decoded: the heaviest settings that fit the worker's budget.

A chunk's peak memory is bounded in its length (a stream: `chunk_work`) but not in its frame size,
so a worker estimates the peak of the chunk's plan from the frame size, the engine and model, the
flow scale, the frame pairs per engine call, `model=auto`'s choice pass and the encoder, and picks
the highest flow scale (then the most pairs per call) whose estimate fits its budget
(`WORKER_MEMORY_BYTES`). When nothing fits whole, the last lever is tiles (rife only): at the lowest
scale with one pair per call, each pair runs tile by tile (`engines/tiling.py`), the largest tile
(`TILES`) that fits first. Only a chunk that does not fit even in the smallest tile fails at once
(`E_CHUNK_TOO_LARGE_FOR_MEMORY`) instead of growing until the kernel kills the worker. The flow
engine is never tiled: its whole-frame work is small per pixel (an 8K pair fits in ~4.3 GiB).

The estimate is the worker process's resident memory when the chunk starts (its engines loaded)
plus the chunk's own peak growth plus the encoder's peak (FFmpeg, a child process in the same
memory budget), with a small margin:

    growth  = fixed + pixels × (per_pixel + scale² × per_call_scaled_pixel)
              + pairs × (per_pair + pixels × (per_pair_pixel + scale² × per_scaled_pixel))
              (`model=auto`: its heavier model's, plus the frames its choice holds)
    encoder = fixed + pixels × (per_pixel + frames held × per_held_frame_pixel)

In tiles, the network's part is the one-pair growth of a frame the size of the largest tile (padded,
overlaps included), and what stays frame-sized (decoded and output frames, the blend's accumulators)
is `TILED_FRAME_PIXEL` per pixel of the whole frame:

    growth  = growth(tile pixels, one pair) + pixels × TILED_FRAME_PIXEL

Frame pairs per call weigh most on a CPU worker: every pair's full-size tensors (input, padding,
warps, blend, output) are alive at once, whatever the flow scale. The coefficients were fitted to
peaks measured on a 2-core x86 CPU worker (rife on eager torch with bf16 autocast, as `auto`
picks on CPUs with native bf16), each the first chunk of a fresh process: `scripts/bench_memory.py`,
table in docs/benchmarks.md. A CUDA worker's host side is estimated, not measured; its device memory
is left to the out-of-memory ladder (`memory`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from infiniteflow_common.errors import InfiniteFlowError
from services.gpu_interp.engines.tiling import OVERLAP, tile_grid
from services.gpu_interp.memory import MIN_SCALE

MIB = 1 << 20
MARGIN = 1.12
"""Headroom over the fitted peak: the measured growth of the same settings varies by up to ±10 % between
runs and chunk lengths (allocator slack), and the estimate must stay above it (within 1.3×)."""


class ChunkTooLargeForMemory(InfiniteFlowError):  # noqa: N818 - reads as the condition it reports
    """Even the lightest plan would not fit the worker's memory budget: the job fails before decoding."""

    code = "E_CHUNK_TOO_LARGE_FOR_MEMORY"


@dataclass(frozen=True)
class EngineCost:
    """Fitted peak growth of a worker's chunk, in bytes (see the module doc for the formula)."""

    fixed: float
    per_pixel: float
    per_pair_pixel: float
    per_scaled_pixel: float
    per_pair: float = 0.0  # bytes per pair whatever its size (scratch buffers of the network's layers)
    per_call_scaled_pixel: float = 0.0  # × pixels × scale², once per call (flow: one pair at a time)


@dataclass(frozen=True)
class EncoderCost:
    """Fitted peak RSS of an FFmpeg encode, in bytes: it grows with the frames the encoder holds
    (its lookahead and frame threads) until `held_frames`, then stays flat however long the chunk."""

    fixed: float
    per_pixel: float
    per_held_frame_pixel: float = 0.0
    held_frames: int = 48


# Fitted on this project's reference CPU worker (scripts/bench_memory.py); see the module doc.
ENGINE_COSTS: dict[str, EngineCost] = {
    # 360p–1080p, scale 1–0.25, 1–4 pairs: within ±1.5 % (DIS runs one pair at a time: its buffers
    # at the flow scale are paid once per call; the batch's frames and results per pair)
    "flow": EngineCost(
        fixed=14 * MIB, per_pixel=63.0, per_pair_pixel=16.0, per_scaled_pixel=0.0, per_call_scaled_pixel=100.0
    ),
    # 360p–1080p, scale 1–0.25, 1–4 pairs: within −5 %/+4 % of the measured growth before the margin
    "hdv3": EngineCost(
        fixed=0.0, per_pixel=140.0, per_pair_pixel=260.0, per_scaled_pixel=194.0, per_pair=39 * MIB
    ),
    # the flow scale barely changes v4.25's peak: its full-size work dominates (−2 %/+3 %)
    "v4.25": EngineCost(
        fixed=150 * MIB, per_pixel=0.0, per_pair_pixel=512.0, per_scaled_pixel=0.0, per_pair=8 * MIB
    ),
}
ENCODER_COSTS: dict[str, EncoderCost] = {
    # x264 (default preset): 360p to 4K, 5 to 150 frames; flat from about 50 frames (lookahead 40)
    "libx264": EncoderCost(fixed=70 * MIB, per_pixel=30.0, per_held_frame_pixel=3.8, held_frames=48),
    # x265 (medium) and SVT-AV1 (preset 8): 720p and 1080p, 60 frames, taken as their flat peak
    "libx265": EncoderCost(fixed=110 * MIB, per_pixel=190.0),
    "libsvtav1": EncoderCost(fixed=250 * MIB, per_pixel=240.0),
}
X264_LOOKAHEAD = {
    "ultrafast": 0, "superfast": 0, "veryfast": 10, "faster": 20, "fast": 30, "medium": 40,
    "slow": 50, "slower": 60, "veryslow": 60, "placebo": 60,
}  # fmt: skip
"""x264's rc-lookahead by preset: the frames it holds beyond its threads' own."""
UNKNOWN_ENCODER = EncoderCost(fixed=250 * MIB, per_pixel=420.0)
"""Encoders not measured (libaom-av1, …): twice x264's flat peak per pixel, so the plan errs on the safe side."""
CUDA_HOST_COST = EngineCost(fixed=256 * MIB, per_pixel=32.0, per_pair_pixel=24.0, per_scaled_pixel=0.0)
"""A CUDA worker's host memory for rife: frames in and out per pair, the network's work stays on the
device (not measured here: no GPU; the device's own memory is left to the out-of-memory ladder)."""
AUGMENTATIONS = {"fast": 1, "tta": 3, "best": 8}
AUGMENTATION_PAIR_PIXEL = 24.0
"""Per pixel, per pair, per augmentation beyond the first (`tta`, `best`): measured +37 MB for tta's two
extra at 720p with one pair (20 B/px each)."""
AUTO_FIXED = 192 * MIB
"""`model=auto`'s extra over its heavier model beside the held frames: two models' allocations leave
more behind, and it varies between runs (measured 60–210 MiB at 360p–1080p)."""
HELD_FRAME_BYTES = 4.5
"""Per pixel of each frame `model=auto`'s choice holds: the decoded YUV 4:2:0 frame and its RGB copy."""
TILES = (2048, 1536, 1024)
"""Tile sides tried, largest first, when nothing fits whole: fewer tiles cost less overlap and time."""
TILED_FRAME_PIXEL = 35.0
"""Per pixel of the whole frame, what a tiled chunk keeps frame-sized beside the tile's network work:
the pair's decoded frames, the blend's float32 accumulator and weights, the output frames in flight.
Fitted on 8K pairs at scale 0.25 (hdv3 in 2048- and 1024-pixel tiles, v4.25 in 2048): with the
whole-frame coefficients at the tile's size, the growth comes out at 0.98–1.03 of the measured."""
PAD_MULTIPLES = {"hdv3": 32, "v4.25": 64}
"""What each RIFE model pads a frame (here: a tile) to at flow scale 1; ÷ the scale below 1."""


@dataclass(frozen=True)
class ChunkShape:
    """What decides a chunk's memory besides the plan: frame size, engine, model, encoder, auto's window."""

    width: int
    height: int
    engine: str
    model: str | None  # a RIFE model name, "auto" (both, and a choice pass), or None for flow
    encoder: str
    preset: str | None = None
    quality: str = "fast"  # rife's quality mode: tta and best keep 3 and 8 augmented estimates per pair
    choice_window: int = 0  # frames auto's choice holds at once (0: no choice pass)
    frames_out: int | None = None  # frames the chunk encodes (None: a long chunk, the encoder's flat peak)
    device: str = "cpu"  # where the engine runs: "cuda…" keeps its tensors off the host

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class MemoryPlan:
    """The settings a chunk runs with, what they are estimated to take, and against what budget.

    `scale` None: the engine has no flow scale. `estimate_bytes` is the whole worker's estimated
    peak (resident at the start + the chunk's growth + the encoder).
    """

    scale: float | None
    batch_size: int
    baseline_bytes: int
    chunk_bytes: int
    budget_bytes: int
    fits: bool
    lighter: bool = False  # lighter than configured: the budget chose a lower scale or fewer pairs
    tile: int | None = None  # each pair in tiles of at most this many pixels a side (None: whole frames)

    @property
    def estimate_bytes(self) -> int:
        return self.baseline_bytes + self.chunk_bytes


def _models(shape: ChunkShape) -> list[str]:
    if shape.engine == "flow":
        return ["flow"]
    if shape.model in (None, "auto"):
        return ["hdv3", "v4.25"]
    return [shape.model]


def tile_pixels(shape: ChunkShape, model: str, scale: float | None, tile: int) -> int:
    """Pixels of the largest tile a pair of this shape is split into, padded as the model pads it."""
    multiple = max(PAD_MULTIPLES.get(model, 64), int(PAD_MULTIPLES.get(model, 64) / (scale or 1.0)))
    tiles = tile_grid(shape.width, shape.height, max_tile=tile, overlap=OVERLAP, multiple=multiple)
    return max(
        -(-(t.y1 - t.y0) // multiple) * multiple * -(-(t.x1 - t.x0) // multiple) * multiple for t in tiles
    )


def engine_bytes(shape: ChunkShape, scale: float | None, batch_size: int, tile: int | None = None) -> float:
    """Estimated peak growth of the worker process for the chunk (no encoder, no margin); in `tile`s,
    one tile's network work plus what stays frame-sized."""
    s2 = (scale if scale is not None else 1.0) ** 2
    growth = []
    for name in _models(shape):
        px = shape.pixels if tile is None else tile_pixels(shape, name, scale, tile)
        cost = ENGINE_COSTS.get(name, ENGINE_COSTS["hdv3"])
        if shape.device.startswith("cuda") and name != "flow":
            cost = CUDA_HOST_COST
        once = cost.fixed + px * (cost.per_pixel + s2 * cost.per_call_scaled_pixel)
        per_pair = cost.per_pair + px * (cost.per_pair_pixel + s2 * cost.per_scaled_pixel)
        if name != "flow":  # each extra augmentation keeps its padded frames, flows and mask
            per_pair += (AUGMENTATIONS.get(shape.quality, 1) - 1) * px * AUGMENTATION_PAIR_PIXEL
        growth.append(once + batch_size * per_pair)
    # auto's models run one after the other (the choice, then the chosen one): their buffers are
    # reused, so the heavier one counts, plus the choice's held frames and a little allocator slack
    total = max(growth)
    if tile is not None:
        total += shape.pixels * TILED_FRAME_PIXEL
    if shape.choice_window:
        total += AUTO_FIXED + shape.choice_window * shape.pixels * HELD_FRAME_BYTES
    return total


def encoder_bytes(shape: ChunkShape) -> float:
    """Estimated peak RSS of the chunk's FFmpeg encoder."""
    cost = ENCODER_COSTS.get(shape.encoder, UNKNOWN_ENCODER)
    most = cost.held_frames
    if shape.encoder == "libx264" and shape.preset in X264_LOOKAHEAD:
        # measured at the default (medium: lookahead 40); other presets hold their own lookahead
        most = X264_LOOKAHEAD[shape.preset] + cost.held_frames - X264_LOOKAHEAD["medium"]
    held = most if shape.frames_out is None else min(shape.frames_out, most)
    return cost.fixed + shape.pixels * (cost.per_pixel + held * cost.per_held_frame_pixel)


def chunk_bytes(shape: ChunkShape, scale: float | None, batch_size: int, tile: int | None = None) -> int:
    """Estimated peak memory the chunk adds to the worker at these settings: engine growth + encoder."""
    return int(MARGIN * (engine_bytes(shape, scale, batch_size, tile) + encoder_bytes(shape)))


def tiles_for(shape: ChunkShape) -> list[int]:
    """The tile sides to try for this shape, largest first: rife only (flow has no tiles), and only
    those smaller than the frame's longer side (a tile as large as the frame is the whole frame)."""
    if shape.engine == "flow":
        return []
    return [tile for tile in TILES if tile < max(shape.width, shape.height)]


def steps(
    scale: float | None, batch_size: int, *, min_scale: float = MIN_SCALE
) -> Iterator[tuple[float | None, int]]:
    """Candidate settings, heaviest first: the highest scale first (quality), and at each scale the
    most pairs per call (speed) down to one; scales halve down to `min_scale`."""
    scales: list[float | None] = [scale]
    if scale is not None:
        while scale / 2 >= min_scale - 1e-9:
            scale /= 2
            scales.append(scale)
    for candidate in scales:
        batch = batch_size
        while True:
            yield candidate, batch
            if batch == 1:
                break
            batch = max(1, batch // 2)


def plan_for(
    shape: ChunkShape,
    *,
    budget_bytes: int,
    baseline_bytes: int,
    scale: float | None,
    batch_size: int,
    min_scale: float = MIN_SCALE,
) -> MemoryPlan:
    """The heaviest settings from `scale` and `batch_size` down whose estimate fits `budget_bytes`;
    when none fits whole, the lightest in the largest tile that fits (`tiles_for`).

    `baseline_bytes` is what the worker holds before the chunk. When nothing fits, the lightest
    settings (in the smallest tile, where the engine has tiles) are returned with `fits` False (the
    caller fails the chunk with `ChunkTooLargeForMemory`).
    """
    last: MemoryPlan | None = None
    candidates: list[tuple[float | None, int, int | None]] = [
        (step_scale, step_batch, None)
        for step_scale, step_batch in steps(scale, batch_size, min_scale=min_scale)
    ]
    lightest_scale, _ = candidates[-1][:2]  # steps() yields at least the settings asked for
    candidates += [(lightest_scale, 1, tile) for tile in tiles_for(shape)]
    for step_scale, step_batch, tile in candidates:
        need = chunk_bytes(shape, step_scale, step_batch, tile)
        last = MemoryPlan(
            scale=step_scale,
            batch_size=step_batch,
            baseline_bytes=baseline_bytes,
            chunk_bytes=need,
            budget_bytes=budget_bytes,
            fits=baseline_bytes + need <= budget_bytes,
            lighter=(step_scale, step_batch, tile) != (scale, batch_size, None),
            tile=tile,
        )
        if last.fits:
            return last
    assert last is not None
    return last


def too_large(shape: ChunkShape, plan: MemoryPlan) -> ChunkTooLargeForMemory:
    """The error for a chunk whose lightest plan does not fit, with the numbers an operator needs."""
    scale = "" if plan.scale is None else f"at flow scale {plan.scale:g} "
    tiles = "" if plan.tile is None else f" in {plan.tile}-pixel tiles"
    return ChunkTooLargeForMemory(
        f"a {shape.width}×{shape.height} chunk ({shape.engine}"
        + (f", model {shape.model}" if shape.model else "")
        + f", {shape.encoder}) needs an estimated {plan.estimate_bytes / MIB:,.0f} MiB even {scale}with one "
        f"frame pair per call{tiles}, over this worker's budget of {plan.budget_bytes / MIB:,.0f} MiB "
        f"(WORKER_MEMORY_BYTES); give the worker more memory, or upload a smaller video"
    )
