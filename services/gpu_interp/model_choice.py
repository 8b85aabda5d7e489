"""`model=auto`: pick the RIFE model for one chunk from evidence in the chunk itself.

Before a chunk is interpolated, each candidate model re-creates a few real frames of it from their
neighbours — the quality self-check's method (`quality.self_check`: frame i from frames i − 1 and
i + 1 at t = 1/2, PSNR against the real frame i), on frames spread over the chunk — and the model
with the higher mean PSNR does the chunk. Neither model wins everywhere (HDv3 on small motion at
t = 1/2, v4.25 on large motion and other timesteps), and the chunk's own frames say which case this is.

The check re-creates frames at t = 1/2, so it measures what a chunk needs only when every frame the
chunk adds is at t = 1/2 (×2). Chunks with other timesteps (×4, ×8, target rates) get the measured
rule without a check: there the difference between the models is mostly how they reach t ≠ 1/2
(HDv3 by bisection or flow scaling, v4.25 natively), which a t = 1/2 check cannot see — on the
generated ×4 clip the check preferred HDv3 (27.64 dB) where v4.25 makes 31.20 dB (docs/benchmarks.md).

Budget: the choice and the chunk's self-check together may cost at most `budget` (6 %) of the
chunk's engine work, whichever model wins (the chunk then costs that model's work); the chosen
model's check is the chunk's self-check, so nothing else checks the chunk. Work is counted as
network passes × pixels × each model's relative cost. Within that:
- each candidate re-creates a window of `CHECK_SIDE`² pixels at the network's working resolution
  (`CHECK_SIDE / scale` on the frame; the whole frame if smaller) where the frame's neighbours
  differ most, not whole frames: a 1080p chunk's check costs 3 % of a frame per sample, so chunks
  of every size can afford one (whole frames afforded none at 1080p);
- the windows have one shape for every frame size from 256 px up to 1440p (256 × 256), so the
  worker warms both candidates up on it once (`warm_up`, with the engines' loading) and the check
  runs on the engines' own backends at the chunk's cost per pixel; no chunk pays the first call of
  a new shape (a compiling backend converts its network, about a minute for a frame size on a
  2-core CPU; eager torch allocates and builds kernels). Other window shapes (frames under 256 px,
  scales below 1) run without compiling backends (`InterpolationEngine.uncompiled`): eager torch
  on an oversubscribed CPU costs several times OpenVINO's per pixel, but never a conversion;
- a window cannot see the frame's edges, where the models differ too (v4.25 pads frames to a
  multiple of 64 with zeros, HDv3 to 32 with copies: on a 2 px/frame pan whole frames favour HDv3
  by 5.6 dB, all of it at the edges, while a window puts v4.25 0.3 dB ahead), so a window check
  overrides the rule's model only by a clear margin (`WINDOW_MARGIN_DB`);
- a chunk too short for one sample per model within the budget is not checked; it gets the rule
  (`models.rule_for`: hdv3 when every new frame is at t = 1/2, v4.25 otherwise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from services.gpu_interp.engines.base import Frames, InterpolationEngine
from services.gpu_interp.engines.models import AUTO, MODELS, ModelSpec, rule_for
from services.gpu_interp.quality import ChunkQuality, sample_frames, self_check

CHOICE_BUDGET = 0.06
"""Share of the chunk's planned engine work the choice and the self-check may cost together."""
MAX_SAMPLES = 3
"""Frames each candidate re-creates at most."""
CHECK_SIDE = 256
"""Side of the window each candidate re-creates, in pixels at the network's working resolution
(RIFE's training crops are 224–256 px: context for the motion it resolves; at 128 px a
28 px/frame pan is already lost)."""
CHECK_COST = 1.5
"""A check's pass × pixel against a chunk's: the check runs eager where hdv3's chunk runs OpenVINO
(1.4× faster, docs/benchmarks.md), scores its frames, and frames under 256 px give windows of a
shape not warmed up (measured: 2 windows of 320×240 took 8.8 % of a 96-pair chunk counted at 1×)."""
WINDOW_MARGIN_DB = 1.0
"""Lead a window check needs to override the rule's model (see the module doc)."""

ChosenBy = Literal["job", "check", "rule"]
FrameSource = Callable[[int], npt.NDArray[Any]]
"""Frame i of the chunk as an RGB array (decoded on demand)."""


@dataclass(frozen=True)
class ModelChoice:
    """Which model does the chunk, how it was picked, and each candidate's check (empty unless
    `chosen_by` is "check")."""

    model: str
    chosen_by: ChosenBy
    checks: Mapping[str, ChunkQuality] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def scores(self) -> dict[str, float]:
        """Mean PSNR (dB) of the re-created frames, by model."""
        return {name: check.psnr_db for name, check in self.checks.items()}

    @property
    def quality(self) -> ChunkQuality | None:
        """The chosen model's check: the chunk's quality self-check, already done."""
        return self.checks.get(self.model)


def planned_passes(
    model: ModelSpec, pair_times: Iterable[Sequence[Fraction]], bisect_depth: int = 3
) -> float:
    """The chunk's engine work for `model`, in passes of the network (× its relative cost).

    A native-timestep model runs once per requested t. HDv3 runs once per bisection midpoint it
    needs for dyadic t (t = 1/4 needs 1/2 first), plus once per pair for all non-dyadic t together
    (flow scaling shares one estimate). Quality modes multiply every pass alike, the check's too.
    """
    total = 0
    for times in pair_times:
        inner = {Fraction(t) for t in times if 0 < t < 1}
        if model.native_timesteps:
            total += len(inner)
            continue
        midpoints: set[Fraction] = set()
        flowscale = False
        for t in inner:
            if t.denominator & (t.denominator - 1) or t.denominator > (1 << bisect_depth):
                flowscale = True
                continue
            lo, hi = Fraction(0), Fraction(1)
            while (mid := (lo + hi) / 2) != t:
                midpoints.add(mid)
                lo, hi = (lo, mid) if t < mid else (mid, hi)
            midpoints.add(t)
        total += len(midpoints) + int(flowscale)
    return total * model.relative_cost


def all_halves(times: Iterable[Fraction]) -> bool:
    """True when every frame to make (0 < t < 1) is at t = 1/2: what the check itself measures."""
    return all(t == Fraction(1, 2) for t in (Fraction(x) for x in times) if 0 < t < 1)


def decided_by_rule(times: Iterable[Fraction | float], frame_count: int) -> str | None:
    """The model `auto` takes by its rule (`rule_for`) whatever the chunk's frames show, or None when
    it may check both models on them: only chunks of 3 frames or more whose new frames are all at
    t = 1/2 are checked. Known before anything is decoded, so the memory plan counts one model."""
    exact = [Fraction(t) for t in times]
    if not all_halves(exact) or frame_count < 3:
        return rule_for([float(t) for t in exact])
    return None


def check_window(height: int, width: int, scale: float | None, side: int = CHECK_SIDE) -> tuple[int, int]:
    """(height, width) each candidate re-creates of a frame: `side` px at the working `scale`."""
    edge = max(1, round(side / (scale or 1.0)))
    return min(height, edge), min(width, edge)


def affordable_samples(
    frame_count: int,
    pair_times: Iterable[Sequence[Fraction]],
    candidates: Sequence[ModelSpec],
    budget: float = CHOICE_BUDGET,
    max_samples: int = MAX_SAMPLES,
    *,
    frame_pixels: int = 1,
    check_pixels: int = 1,
) -> int:
    """Frames each candidate may re-create, whichever candidate then does the chunk.

    Every sample costs one pass of every candidate on `check_pixels` (× `CHECK_COST`); if candidate c wins, the chunk
    costs c's planned passes on `frame_pixels` each, and all samples must fit in `budget` × that,
    for every c (the chosen model's samples are the chunk's self-check: nothing else is spent).
    """
    if frame_count < 3 or budget <= 0 or not candidates or max_samples <= 0:
        return 0
    times = list(pair_times)
    per_sample = sum(spec.relative_cost for spec in candidates) * check_pixels * CHECK_COST
    allowed = min(budget * planned_passes(spec, times) * frame_pixels for spec in candidates)
    return max(0, min(max_samples, frame_count - 2, math.floor(allowed / per_sample + 1e-9)))


def choose_model(
    requested: str,
    engines: Mapping[str, InterpolationEngine],
    frame: FrameSource,
    frame_count: int,
    pair_times: Mapping[int, Sequence[Fraction]],
    *,
    budget: float = CHOICE_BUDGET,
    max_samples: int = MAX_SAMPLES,
    batch_size: int = 4,
    window: int | None = None,
    check_side: int = CHECK_SIDE,
    clock: Callable[[], float] = time.perf_counter,
) -> ModelChoice:
    """The model for a chunk of `frame_count` frames whose pair i needs `pair_times[i]`.

    `requested` is the job's `model`: a named model is used as it is; `auto` checks the candidate
    `engines` (by model name) on windows of sampled frames when every new frame is at t = 1/2 and
    the budget allows, else applies the rule. Ties go to the rule's model. `window`: only frames
    0 … window − 1 are at hand (a streaming worker decides before the rest is decoded), so the
    checked frames are spread over those. `check_side`: see `CHECK_SIDE`.
    """
    if requested != AUTO:
        return ModelChoice(requested, "job")
    times = [t for ts in pair_times.values() for t in ts]
    fallback = rule_for([float(t) for t in times])
    if fallback not in engines:
        fallback = next(iter(engines))
    if decided_by_rule(times, frame_count) is not None or len(engines) < 2:
        return ModelChoice(fallback, "rule")
    started = clock()
    height, width = frame(0).shape[:2]
    # the candidates share the chunk's memory step (AutoModel.set_memory), so one scale for all
    scale = engines[fallback].memory_scale(height, width)
    candidates = [MODELS[name] for name in engines]
    seen = frame_count if window is None else min(window, frame_count)
    size: tuple[int, int] | None = check_window(height, width, scale, check_side)
    assert size is not None
    samples = affordable_samples(
        frame_count,
        pair_times.values(),
        candidates,
        budget,
        min(max_samples, seen - 2),
        frame_pixels=height * width,
        check_pixels=size[0] * size[1],
    )
    if size == (height, width):
        size = None  # whole frames: they show everything, the edges included
    if samples == 0:
        return ModelChoice(fallback, "rule")
    picks = sample_frames(seen, samples)
    checks: dict[str, ChunkQuality] = {}
    # the warmed-up window shape runs on the engines' own backends, at the chunk's cost per pixel;
    # any other shape eagerly, so a check never converts a network for a shape of its own
    warmed = size == (check_side, check_side) and scale in (None, 1.0)
    for name, engine in engines.items():
        with nullcontext() if warmed else engine.uncompiled():
            check = self_check(engine, frame, picks, batch_size=batch_size, window=size, clock=clock)
        assert check is not None  # picks is not empty
        checks[name] = check
    best = max(checks, key=lambda name: (checks[name].psnr_db, name == fallback))
    if size is not None and checks[best].psnr_db - checks[fallback].psnr_db < WINDOW_MARGIN_DB:
        best = fallback
    return ModelChoice(best, "check", checks, clock() - started)


def warm_up(engines: Mapping[str, InterpolationEngine], side: int = CHECK_SIDE) -> None:
    """One call of each candidate on a `side`² window: the check's shape at scale 1.

    The first call of a shape costs far more than the next (OpenVINO converts hdv3's network for
    it, from the compile cache after a restart; eager torch allocates and builds kernels); a worker
    makes it while loading the engines, so no chunk's check pays it.
    """
    blank = np.zeros((1, side, side, 3), np.uint8)
    for engine in engines.values():
        engine.interpolate_times(blank, blank, [0.5])


class AutoModel(InterpolationEngine):
    """The candidate models as one engine: `choose` picks the one that interpolates next.

    Memory settings go to every candidate, so whichever is chosen runs at the chunk's memory step.
    """

    name = "rife"

    def __init__(self, engines: Mapping[str, InterpolationEngine]) -> None:
        if not engines:
            raise ValueError("AutoModel needs at least one candidate engine")
        self.engines = dict(engines)
        self.active = next(iter(self.engines))

    @property
    def device(self) -> Any:
        return getattr(self.engines[self.active], "device", "cpu")

    def choose(
        self,
        frame: FrameSource,
        frame_count: int,
        pair_times: Mapping[int, Sequence[Fraction]],
        **options: Any,
    ) -> ModelChoice:
        """`choose_model` for `auto`; the chosen engine interpolates from now on."""
        choice = choose_model(AUTO, self.engines, frame, frame_count, pair_times, **options)
        self.active = choice.model
        return choice

    def memory_scale(self, height: int, width: int) -> float | None:
        return self.engines[self.active].memory_scale(height, width)

    def set_memory(self, scale: float | None, batch_size: int | None, tile: int | None = None) -> None:
        for engine in self.engines.values():
            engine.set_memory(scale, batch_size, tile)

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        return self.engines[self.active].interpolate_times(first, second, times)
