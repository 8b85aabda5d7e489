"""Interpolating one chunk as a bounded stream: decode → interpolate → encode, frame by frame.

The chunk's source frames arrive in order; each pair that needs in-between frames is queued, and
pairs wanting the same timesteps are batched. Output frames leave for the encoder as soon as
everything before them is ready, so at most a batch's frames (and their outputs) are held, however
long the chunk or large the multiplier. Slots with t = 0 are written from the decoded source frame
itself, so copies (scene ends, the last frame, every source position) are the source's own pixels.
A budgeted quality self-check re-creates a few real frames at the end (`quality`), from neighbours
kept aside on the way. `interpolate_with_retries` runs the whole stream again with lighter settings
when memory runs out (`memory`).

With `choose` (a job's `model=auto`), the model is picked before anything is interpolated, from the
chunk's first `CHOICE_WINDOW` frames (held back for that moment only, so memory stays bounded); the
chosen model's check is then the chunk's quality self-check (`model_choice`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from infiniteflow_common.media import MediaError, rgb_format, to_rgb
from infiniteflow_common.timing import Slot
from services.gpu_interp.engines.base import InterpolationEngine
from services.gpu_interp.engines.models import AUTO
from services.gpu_interp.memory import (
    MIN_SCALE,
    EngineOutOfMemory,
    MemoryStep,
    is_out_of_memory,
    lightest_step,
    memory_ladder,
    release_memory,
)
from services.gpu_interp.model_choice import FrameSource, ModelChoice, decided_by_rule
from services.gpu_interp.quality import ChunkQuality, sample_count, sample_frames, self_check

CHOICE_WINDOW = 12
"""Leading frames of a chunk that `model=auto` checks the models on (decoded frames held at once)."""


class ChooseModel(Protocol):
    """Picks the chunk's model: choose(frame, frame_count, pair_times, window=…) (`AutoModel.choose`)."""

    def __call__(
        self,
        frame: FrameSource,
        frame_count: int,
        pair_times: Mapping[int, Sequence[Fraction]],
        /,
        *,
        window: int,
    ) -> ModelChoice: ...


class FrameSink(Protocol):
    """Where output frames go, in order (the chunk's encoder, or a lossless file in tests)."""

    count: int

    def write(self, frame: Any) -> None:
        """Append a decoded `av.VideoFrame`."""

    def write_rgb(self, rgb: npt.NDArray[Any]) -> None:
        """Append an (H, W, 3) RGB array."""


@dataclass(frozen=True)
class ChunkOutcome:
    """What interpolating a chunk produced: its frame count, its quality self-check (None: unchecked),
    and the memory settings it finally ran with (scale None: the engine has none; tile None: whole frames)."""

    frames_out: int
    quality: ChunkQuality | None
    scale: float | None = None
    batch_size: int | None = None
    tile: int | None = None
    oom_retries: int = 0
    model_choice: ModelChoice | None = None  # set when the chunk's model was chosen here (auto)
    memory_estimate_bytes: int | None = None  # the memory plan's estimated peak (worker + encoder)
    peak_rss_bytes: int | None = None  # the measured peak while the chunk ran (worker + encoder)

    @property
    def check_seconds(self) -> float:
        """Seconds spent checking the chunk: the model choice when it ran a check (its winner's check
        is the self-check), plus a self-check of its own otherwise."""
        chose = self.model_choice.seconds if self.model_choice is not None else 0.0
        own = self.quality is not None and (
            self.model_choice is None or self.quality != self.model_choice.quality
        )
        return chose + (self.quality.seconds if own and self.quality is not None else 0.0)


OnRetry = Callable[[MemoryStep, MemoryStep, BaseException], None]
"""Told (failed step, next step, the error) before each out-of-memory retry."""


def interpolate_with_retries(
    engine: InterpolationEngine,
    frames: Callable[[], Iterable[Any]],
    sink: Callable[[], AbstractContextManager[FrameSink]],
    slots: Sequence[Slot],
    *,
    height: int,
    width: int,
    batch_size: int,
    min_scale: float = MIN_SCALE,
    on_retry: OnRetry | None = None,
    conservative: bool = False,
    planned: MemoryStep | None = None,
    **options: Any,
) -> ChunkOutcome:
    """`interpolate_chunk` over fresh `frames()` into a fresh `sink()`, retried down the memory ladder.

    `conservative` starts (and ends) at the bottom of the ladder: the lowest scale, one pair per call
    (the last try of a chunk whose workers were killed, where an in-process retry never got to run).
    `planned` starts the ladder at the settings the chunk's memory plan chose (`memory_plan`) instead
    of the engine's own scale and `batch_size`, its tile size (if any) kept on every step: an estimate
    that fell short still has the ladder below.
    The engine is put back to its configured settings afterwards (it serves the next chunk too).
    Raises `EngineOutOfMemory` (permanent) when the lightest step fails as well.
    """
    on_batch: Callable[[int, int], None] | None = options.pop("on_batch", None)
    scale = engine.memory_scale(height, width)
    tile = None
    if planned is not None:
        scale, batch_size, tile = planned.scale, planned.batch_size, planned.tile
    if conservative:
        ladder = [lightest_step(scale, min_scale=min_scale, tile=tile)]
    else:
        ladder = memory_ladder(scale, batch_size, min_scale=min_scale, tile=tile)
    try:
        for tries, step in enumerate(ladder):
            engine.set_memory(step.scale, step.batch_size, step.tile)
            try:
                with sink() as output:
                    outcome = interpolate_chunk(
                        engine,
                        frames(),
                        output,
                        slots,
                        batch_size=step.batch_size,
                        on_batch=_keeping_step(engine, step, on_batch),
                        **options,
                    )
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                release_memory()
                if tries + 1 == len(ladder):
                    raise EngineOutOfMemory(
                        f"the chunk ran out of memory even at scale {step.scale} with {step.batch_size} "
                        f"pair(s) per call{f' in {step.tile}-pixel tiles' if step.tile else ''} ({exc}); "
                        "give the worker more memory or use smaller input"
                    ) from exc
                if on_retry is not None:
                    on_retry(step, ladder[tries + 1], exc)
                continue
            return replace(
                outcome, scale=step.scale, batch_size=step.batch_size, tile=step.tile, oom_retries=tries
            )
    finally:
        engine.set_memory(None, None)
    raise AssertionError("unreachable: the ladder has at least one step")


def _keeping_step(
    engine: InterpolationEngine, step: MemoryStep, on_batch: Callable[[int, int], None] | None
) -> Callable[[int, int], None] | None:
    """`on_batch`, then the engine set back to `step`: a chunk run in a pause of this one (preemption)
    shares the worker's engines and leaves them at their configured settings."""
    if on_batch is None:
        return None

    def after_batch(done: int, total: int) -> None:
        on_batch(done, total)
        engine.set_memory(step.scale, step.batch_size, step.tile)

    return after_batch


def planned_model(model: str | None, slots: Sequence[Slot], frame_count: int) -> tuple[str | None, int]:
    """The model a chunk's memory plan counts, and the frames `auto`'s choice will hold (0: none).

    A chunk `auto` cannot check (`decided_by_rule`) runs its rule's model alone, with no choice pass:
    known from the plan before anything is decoded.
    """
    if model != AUTO:
        return model, 0
    ruled = decided_by_rule([slot.t for slot in slots], frame_count)
    return (ruled, 0) if ruled is not None else (AUTO, min(CHOICE_WINDOW, frame_count))


def wanted_times(slots: Sequence[Slot], frame_count: int) -> dict[int, tuple[Fraction, ...]]:
    """Pair index → the distinct timesteps needed between it and the next frame (pure)."""
    wanted: dict[int, set[Fraction]] = defaultdict(set)
    for slot in slots:
        if not 0 <= slot.source_offset < frame_count:
            raise MediaError(f"slot at frame {slot.source_offset} is outside the chunk", code="E_CHUNK_PLAN")
        if slot.t != 0:
            if slot.source_offset + 1 >= frame_count:
                raise MediaError(
                    f"slot at frame {slot.source_offset} has no right neighbour", code="E_CHUNK_PLAN"
                )
            wanted[slot.source_offset].add(slot.t)
    return {pair: tuple(sorted(times)) for pair, times in wanted.items()}


def interpolate_chunk(
    engine: InterpolationEngine,
    frames: Iterable[Any],
    sink: FrameSink,
    slots: Sequence[Slot],
    *,
    expected_frames: int,
    batch_size: int = 4,
    quality_budget: float = 0.0,
    quality_samples: int = 3,
    on_batch: Callable[[int, int], None] | None = None,
    choose: ChooseModel | None = None,
) -> ChunkOutcome:
    """Stream the chunk's `frames` (decoded, in order) into `sink` as its output `slots`, in order.

    `quality_budget` is the share of the chunk's own pair interpolations the self-check may add
    (0 turns it off); `quality_samples` caps the frames it re-creates. `on_batch(pairs_done,
    pairs_total)` runs after every batch; an exception it raises aborts the chunk. `choose` picks
    the model from the chunk's first frames before any interpolation.
    """
    wanted = wanted_times(slots, expected_frames)
    by_offset: dict[int, list[Fraction]] = defaultdict(list)
    for slot in slots:
        by_offset[slot.source_offset].append(slot.t)
    choice = None
    if choose is not None:
        frames, choice = _choose_on_leading_frames(choose, frames, expected_frames, wanted)
    if choice is not None and choice.quality is not None and quality_budget > 0:
        checked: tuple[int, ...] = ()  # the chosen model's check already scored this chunk
    else:
        checked = sample_frames(
            expected_frames, sample_count(expected_frames, len(wanted), quality_budget, quality_samples)
        )
    kept_for_check = {n for i in checked for n in (i - 1, i, i + 1)}
    stream = _SlotStream(engine, sink, by_offset, wanted, batch_size, on_batch)
    count = 0
    for index, frame in enumerate(frames):
        if index >= expected_frames:
            raise MediaError(
                f"chunk has more frames than its plan's {expected_frames}", code="E_CHUNK_FRAME_COUNT"
            )
        stream.add(index, frame)
        if index in kept_for_check:
            stream.keep(index)
        count = index + 1
    if count != expected_frames:
        raise MediaError(
            f"chunk has {count} frames, its plan says {expected_frames}", code="E_CHUNK_FRAME_COUNT"
        )
    stream.finish()
    if checked:
        quality = self_check(engine, stream.kept.__getitem__, checked, batch_size=batch_size)
    else:
        quality = choice.quality if choice is not None and quality_budget > 0 else None
    return ChunkOutcome(frames_out=sink.count, quality=quality, model_choice=choice)


def _choose_on_leading_frames(
    choose: ChooseModel,
    frames: Iterable[Any],
    expected_frames: int,
    wanted: Mapping[int, Sequence[Fraction]],
) -> tuple[Iterable[Any], ModelChoice]:
    """Run `choose` on the first `CHOICE_WINDOW` frames; the frames, still all to come, and the choice."""
    stream = iter(frames)
    head = list(itertools.islice(stream, min(CHOICE_WINDOW, expected_frames)))
    layout = rgb_format(head[0].format.name) if head else "rgb24"
    rgb: dict[int, npt.NDArray[Any]] = {}

    def frame(index: int) -> npt.NDArray[Any]:
        if index not in rgb:
            rgb[index] = to_rgb(head[index], layout)
        return rgb[index]

    choice = choose(frame, expected_frames, wanted, window=len(head))
    return itertools.chain(head, stream), choice


class _SlotStream:
    """The bounded window between decoded frames and the sink (see the module doc)."""

    def __init__(
        self,
        engine: InterpolationEngine,
        sink: FrameSink,
        by_offset: dict[int, list[Fraction]],
        wanted: dict[int, tuple[Fraction, ...]],
        batch_size: int,
        on_batch: Callable[[int, int], None] | None,
    ) -> None:
        self.engine, self.sink, self.by_offset, self.wanted = engine, sink, by_offset, wanted
        self.batch_size, self.on_batch = batch_size, on_batch
        self.frames: dict[int, Any] = {}  # decoded frames not yet written
        self.rgb: dict[int, npt.NDArray[Any]] = {}
        self.results: dict[tuple[int, Fraction], npt.NDArray[Any]] = {}
        self.batch: list[int] = []  # left frames of queued pairs, all wanting `batch_times`
        self.batch_times: tuple[Fraction, ...] = ()
        self.kept: dict[int, npt.NDArray[Any]] = {}  # RGB of the self-check's frames and neighbours
        self.next_out = 0
        self.pairs_done = 0
        self.layout: str | None = None

    def _rgb(self, index: int) -> npt.NDArray[Any]:
        if index not in self.rgb:
            frame = self.frames[index]
            self.layout = self.layout or rgb_format(frame.format.name)
            self.rgb[index] = to_rgb(frame, self.layout)
        return self.rgb[index]

    def add(self, index: int, frame: Any) -> None:
        self.frames[index] = frame
        pair = index - 1
        if pair in self.wanted:
            times = self.wanted[pair]
            if self.batch and times != self.batch_times:
                self._run_batch()
            self.batch.append(pair)
            self.batch_times = times
            if len(self.batch) >= self.batch_size:
                self._run_batch()
        self._drain(upto=index - 1)

    def keep(self, index: int) -> None:
        self.kept[index] = self._rgb(index)

    def finish(self) -> None:
        if self.batch:
            self._run_batch()
        self._drain(upto=max(self.frames, default=-1))

    def _run_batch(self) -> None:
        left = np.stack([self._rgb(i) for i in self.batch])
        right = np.stack([self._rgb(i + 1) for i in self.batch])
        outputs = self.engine.interpolate_times(left, right, list(self.batch_times))
        for t, out in zip(self.batch_times, outputs, strict=True):
            for row, pair in enumerate(self.batch):
                self.results[(pair, t)] = np.asarray(out[row])
        self.pairs_done += len(self.batch)
        self.batch = []
        if self.on_batch is not None:
            self.on_batch(self.pairs_done, len(self.wanted))
        self._drain(upto=max(self.frames, default=-1) - 1)

    def _drain(self, upto: int) -> None:
        """Write every output slot of frames up to `upto` whose in-between frames are all computed."""
        while self.next_out <= upto:
            offset = self.next_out
            if offset in self.wanted and (offset, self.wanted[offset][0]) not in self.results:
                return  # its pair is still queued
            for t in self.by_offset.get(offset, ()):
                if t == 0:
                    self.sink.write(self.frames[offset])
                else:
                    self.sink.write_rgb(self.results[(offset, t)])
            for t in self.wanted.get(offset, ()):
                self.results.pop((offset, t), None)
            self.frames.pop(offset, None)
            self.rgb.pop(offset, None)
            self.next_out += 1
