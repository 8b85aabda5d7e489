"""Interpolating one chunk file: decode, run the engine on the pairs that need it, encode losslessly.

Slots with t = 0 are written from the decoded source frame itself, so copies (scene ends, the last
frame, every source position) are bit-exact. Pairs that share the same set of timesteps are batched.
After the chunk's own frames, a budgeted quality self-check re-creates a few real frames (`quality`).
With `choose` (a job's `model=auto`), the model is picked after decoding, before any interpolation
(`model_choice`); its check of the chosen model is then the chunk's self-check.
`interpolate_with_retries` runs it again with lighter settings when memory runs out (`memory`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from infiniteflow_common.media import LosslessWriter, MediaError, decode_video, rgb_format, to_rgb
from services.gpu_interp.engines.base import InterpolationEngine
from services.gpu_interp.memory import (
    MIN_SCALE,
    EngineOutOfMemory,
    MemoryStep,
    is_out_of_memory,
    memory_ladder,
    release_memory,
)
from services.gpu_interp.model_choice import FrameSource, ModelChoice
from services.gpu_interp.quality import ChunkQuality, sample_count, sample_frames, self_check

ChooseModel = Callable[[FrameSource, int, Mapping[int, Sequence[Fraction]]], ModelChoice]
"""Called as choose(frame, frame_count, pair_times) once the chunk is decoded (e.g. `AutoModel.choose`)."""


@dataclass(frozen=True)
class SlotSpec:
    """One output frame: `t` of the way from chunk frame `offset` to the next."""

    offset: int
    t: Fraction


@dataclass(frozen=True)
class ChunkOutcome:
    """What interpolating a chunk produced: its frame count, its quality self-check (None: unchecked),
    and the memory settings it finally ran with (scale None: the engine has none)."""

    frames_out: int
    quality: ChunkQuality | None
    scale: float | None = None
    batch_size: int | None = None
    oom_retries: int = 0
    model_choice: ModelChoice | None = None  # set when the chunk's model was chosen here (auto)


OnRetry = Callable[[MemoryStep, MemoryStep, BaseException], None]
"""Told (failed step, next step, the error) before each out-of-memory retry."""


def interpolate_with_retries(
    engine: InterpolationEngine,
    source: Path,
    output: Path,
    slots: Sequence[SlotSpec],
    *,
    width: int,
    height: int,
    batch_size: int,
    min_scale: float = MIN_SCALE,
    on_retry: OnRetry | None = None,
    **options: Any,
) -> ChunkOutcome:
    """`interpolate_chunk`, retried down the memory ladder while it runs out of memory.

    The engine is put back to its configured settings afterwards (it serves the next chunk too).
    Raises `EngineOutOfMemory` (permanent) when the lightest step fails as well.
    """
    ladder = memory_ladder(engine.memory_scale(height, width), batch_size, min_scale=min_scale)
    try:
        for tries, step in enumerate(ladder):
            engine.set_memory(step.scale, step.batch_size)
            try:
                outcome = interpolate_chunk(
                    engine, source, output, slots, batch_size=step.batch_size, **options
                )
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                release_memory()
                if tries + 1 == len(ladder):
                    raise EngineOutOfMemory(
                        f"the chunk ran out of memory even at scale {step.scale} with {step.batch_size} "
                        f"pair(s) per call ({exc}); give the worker more memory or use smaller input"
                    ) from exc
                if on_retry is not None:
                    on_retry(step, ladder[tries + 1], exc)
                continue
            return replace(outcome, scale=step.scale, batch_size=step.batch_size, oom_retries=tries)
    finally:
        engine.set_memory(None, None)
    raise AssertionError("unreachable: the ladder has at least one step")


def exact_t(value: float) -> Fraction:
    """The rational timestep a float on the wire stands for (denominators stay small)."""
    return Fraction(value).limit_denominator(1 << 16)


def interpolate_chunk(
    engine: InterpolationEngine,
    source: Path,
    output: Path,
    slots: Sequence[SlotSpec],
    *,
    expected_frames: int,
    out_rate: Fraction,
    batch_size: int = 4,
    quality_budget: float = 0.0,
    quality_samples: int = 3,
    on_batch: Callable[[int, int], None] | None = None,
    choose: ChooseModel | None = None,
) -> ChunkOutcome:
    """Write the chunk's output frames to `output` (FFV1, the source's pixel format).

    `quality_budget` is the share of the chunk's own pair interpolations the self-check may add
    (0 turns it off); `quality_samples` caps the frames it re-creates. `on_batch(pairs_done,
    pairs_total)` runs after every batch; an exception it raises aborts the chunk.
    """
    frames: list[Any] = list(decode_video(source))
    if len(frames) != expected_frames:
        raise MediaError(
            f"chunk has {len(frames)} frames, its plan says {expected_frames}", code="E_CHUNK_FRAME_COUNT"
        )
    first = frames[0]
    layout = rgb_format(first.format.name)
    # pair index → timesteps needed between it and the next frame
    wanted: dict[int, list[Fraction]] = defaultdict(list)
    for slot in slots:
        if slot.t != 0:
            if slot.offset + 1 >= len(frames):
                raise MediaError(f"slot at frame {slot.offset} has no right neighbour", code="E_CHUNK_PLAN")
            wanted[slot.offset].append(slot.t)
    results: dict[tuple[int, Fraction], np.ndarray[Any, Any]] = {}
    rgb_cache: dict[int, np.ndarray[Any, Any]] = {}

    def rgb(index: int) -> np.ndarray[Any, Any]:
        if index not in rgb_cache:
            rgb_cache[index] = to_rgb(frames[index], layout)
        return rgb_cache[index]

    by_times: dict[tuple[Fraction, ...], list[int]] = defaultdict(list)
    for pair, pair_times in wanted.items():
        by_times[tuple(sorted(set(pair_times)))].append(pair)
    choice = choose(rgb, len(frames), wanted) if choose is not None else None
    pairs_done = 0
    for times, pairs in by_times.items():
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            left = np.stack([rgb(i) for i in batch])
            right = np.stack([rgb(i + 1) for i in batch])
            outputs = engine.interpolate_times(left, right, list(times))
            for t, out in zip(times, outputs, strict=True):
                for row, pair in enumerate(batch):
                    results[(pair, t)] = np.asarray(out[row])
            pairs_done += len(batch)
            if on_batch is not None:
                on_batch(pairs_done, len(wanted))
    with LosslessWriter(
        output, width=first.width, height=first.height, pix_fmt=first.format.name, rate=out_rate
    ) as writer:
        for slot in slots:
            if slot.t == 0:
                writer.write(frames[slot.offset])
            else:
                writer.write_rgb(results[(slot.offset, slot.t)])
    results.clear()
    quality = choice.quality if choice is not None and quality_budget > 0 else None
    if quality is None:
        samples = sample_count(len(frames), len(wanted), quality_budget, quality_samples)
        quality = self_check(engine, rgb, sample_frames(len(frames), samples), batch_size=batch_size)
    return ChunkOutcome(frames_out=writer.count, quality=quality, model_choice=choice)
