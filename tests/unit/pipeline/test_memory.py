"""A chunk that runs out of memory is retried at a lower scale, then a smaller batch, and says so."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infiniteflow_common.media import decode_video
from infiniteflow_common.timing import Slot
from services.gpu_interp.chunk_work import interpolate_with_retries
from services.gpu_interp.engines.base import Frames, InterpolationEngine
from services.gpu_interp.engines.flow import FlowEngine
from services.gpu_interp.memory import (
    EngineOutOfMemory,
    MemoryStep,
    SimulatedMemoryLimit,
    is_out_of_memory,
    lightest_step,
    memory_ladder,
)
from tests.support.clips import LosslessWriter, textured


class ScaledBlend(InterpolationEngine):
    """A stand-in with a flow scale (1.0 unless set) that blends, and records every call's batch."""

    name = "blend"

    def __init__(self) -> None:
        self.scale: float | None = None
        self.tile: int | None = None
        self.calls: list[int] = []

    def memory_scale(self, height: int, width: int) -> float | None:
        return self.scale or 1.0

    def set_memory(self, scale: float | None, batch_size: int | None, tile: int | None = None) -> None:
        self.scale = scale
        self.tile = tile

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        self.calls.append(len(first))
        return [(first * (1 - float(t)) + second * float(t)).round().astype(first.dtype) for t in times]


@dataclass
class Retries:
    seen: list[tuple[MemoryStep, MemoryStep]]

    def __call__(self, failed: MemoryStep, following: MemoryStep, error: BaseException) -> None:
        assert is_out_of_memory(error)
        self.seen.append((failed, following))


def _chunk(path: Path, count: int = 9) -> list[Slot]:
    with LosslessWriter(path, width=64, height=32, pix_fmt="yuv444p", rate=Fraction(25)) as writer:
        for i in range(count):
            writer.write_rgb(np.full((32, 64, 3), 20 * i, np.uint8))
    return [Slot(i, Fraction(k, 2)) for i in range(count - 1) for k in range(2)] + [
        Slot(count - 1, Fraction(0))
    ]


def _io(tmp_path: Path) -> tuple[Callable[[], Iterator[Any]], Callable[[], LosslessWriter]]:
    """A fresh decode of the chunk and a fresh output file for every try."""

    def frames() -> Iterator[Any]:
        return decode_video(tmp_path / "in.mkv")

    def sink() -> LosslessWriter:
        return LosslessWriter(tmp_path / "out.mkv", width=64, height=32, pix_fmt="yuv444p", rate=Fraction(50))

    return frames, sink


def test_the_ladder_lowers_the_scale_first_then_the_batch() -> None:
    assert memory_ladder(1.0, 4) == [
        MemoryStep(1.0, 4),
        MemoryStep(0.5, 4),
        MemoryStep(0.25, 4),
        MemoryStep(0.25, 2),
        MemoryStep(0.25, 1),
    ]
    assert memory_ladder(None, 3) == [MemoryStep(None, 3), MemoryStep(None, 1)], "no scale: batches only"
    assert memory_ladder(0.25, 1) == [MemoryStep(0.25, 1)]


def test_gpu_host_and_allocator_failures_count_as_out_of_memory() -> None:
    class OutOfMemoryError(RuntimeError):  # the name torch.cuda gives it
        pass

    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(
        RuntimeError(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 4503599627370496 bytes"
        )
    )
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError) as real:
        torch.empty(2**50, dtype=torch.uint8)
    assert is_out_of_memory(real.value)
    assert not is_out_of_memory(RuntimeError("shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


@pytest.mark.ffmpeg
def test_a_chunk_over_the_memory_budget_is_retried_lighter_and_reports_what_it_used(tmp_path: Path) -> None:
    slots = _chunk(tmp_path / "in.mkv")
    inner = ScaledBlend()
    # 64×32 frames: 4 pairs need 8192 px at scale 1, 2048 at 0.5, 512 at 0.25; 2 pairs at 0.25 need 256
    engine = SimulatedMemoryLimit(inner, max_pixels=300)
    retries = Retries([])
    outcome = interpolate_with_retries(
        engine, *_io(tmp_path), slots, width=64, height=32, batch_size=4, on_retry=retries,
        expected_frames=9,
    )  # fmt: skip
    assert (outcome.scale, outcome.batch_size, outcome.oom_retries) == (0.25, 2, 3)
    assert [failed for failed, _ in retries.seen] == [
        MemoryStep(1.0, 4),
        MemoryStep(0.5, 4),
        MemoryStep(0.25, 4),
    ]
    assert outcome.frames_out == len(slots) == len(list(decode_video(tmp_path / "out.mkv")))
    assert set(inner.calls) == {2}, "only the step that fits ran the engine"
    assert inner.scale is None, "the engine is back at its configured settings for the next chunk"


@pytest.mark.ffmpeg
def test_a_chunk_that_fits_nowhere_fails_the_job_with_a_code(tmp_path: Path) -> None:
    slots = _chunk(tmp_path / "in.mkv")
    engine = SimulatedMemoryLimit(ScaledBlend(), max_pixels=100)
    with pytest.raises(EngineOutOfMemory) as error:
        interpolate_with_retries(
            engine, *_io(tmp_path), slots, width=64, height=32, batch_size=4, expected_frames=9,
        )  # fmt: skip
    assert error.value.code == "E_ENGINE_OOM"
    assert "scale 0.25 with 1 pair" in error.value.message


@pytest.mark.ffmpeg
def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    slots = _chunk(tmp_path / "in.mkv")

    class Broken(ScaledBlend):
        def _interpolate_times(
            self, first: Frames, second: Frames, times: Sequence[Fraction]
        ) -> list[Frames]:
            self.calls.append(len(first))
            raise RuntimeError("shapes cannot be multiplied")

    engine = Broken()
    with pytest.raises(RuntimeError, match="shapes"):
        interpolate_with_retries(
            engine, *_io(tmp_path), slots, width=64, height=32, batch_size=4, expected_frames=9,
        )  # fmt: skip
    assert engine.calls == [4]


def test_a_4k_pair_goes_through_the_flow_engine_untuned_in_well_under_a_minute() -> None:
    strip = textured(3840 + 64, 2160, seed=4)
    first, second = strip[:, :3840], strip[:, 24 : 3840 + 24]
    truth = strip[:, 12 : 3840 + 12]
    engine = FlowEngine()
    assert engine.memory_scale(2160, 3840) == 0.5, "4K flow is estimated at half size by default"
    started = time.perf_counter()
    middle = engine.interpolate(first, second, 0.5)
    assert time.perf_counter() - started < 60
    assert middle.shape == (2160, 3840, 3)
    inner = (slice(64, -64), slice(64, -64))
    error = np.abs(middle[inner].astype(int) - truth[inner].astype(int)).mean()
    assert error < 3, f"mean error {error:.2f} against the true middle frame"


def test_the_lightest_step_is_the_lowest_scale_with_one_pair() -> None:
    assert lightest_step(1.0, min_scale=0.25) == MemoryStep(0.25, 1)
    assert lightest_step(0.5, min_scale=0.3) == MemoryStep(0.3, 1), "min_scale itself, not a halving of 0.5"
    assert lightest_step(0.125, min_scale=0.25) == MemoryStep(0.125, 1), "never above what was configured"
    assert lightest_step(None, min_scale=0.25) == MemoryStep(None, 1), "no scale: one pair only"
    assert lightest_step(1.0, tile=1024) == MemoryStep(0.25, 1, 1024), "a planned tile is kept"
    assert memory_ladder(0.5, 2, tile=1024) == [
        MemoryStep(0.5, 2, 1024), MemoryStep(0.25, 2, 1024), MemoryStep(0.25, 1, 1024)
    ]  # fmt: skip


@pytest.mark.ffmpeg
def test_a_conservative_try_starts_at_the_bottom_of_the_ladder(tmp_path: Path) -> None:
    slots = _chunk(tmp_path / "in.mkv")
    inner = ScaledBlend()
    retries = Retries([])
    outcome = interpolate_with_retries(
        SimulatedMemoryLimit(inner, max_pixels=10_000), *_io(tmp_path), slots, width=64, height=32,
        batch_size=4, on_retry=retries, conservative=True, expected_frames=9,
    )  # fmt: skip
    assert (outcome.scale, outcome.batch_size, outcome.oom_retries) == (0.25, 1, 0)
    assert set(inner.calls) == {1}, "one pair per call although 4 would have fitted"
    assert retries.seen == []
    assert inner.scale is None, "the engine is back at its configured settings for the next chunk"
    with pytest.raises(EngineOutOfMemory, match=r"scale 0\.25 with 1 pair"):
        interpolate_with_retries(
            SimulatedMemoryLimit(ScaledBlend(), max_pixels=100), *_io(tmp_path), slots, width=64,
            height=32, batch_size=4, conservative=True, expected_frames=9,
        )  # fmt: skip


@pytest.mark.ffmpeg
def test_a_chunk_run_in_a_pause_leaves_the_paused_chunk_at_its_planned_settings(tmp_path: Path) -> None:
    slots = _chunk(tmp_path / "in.mkv")
    seen: list[tuple[float | None, int | None]] = []

    class Recording(ScaledBlend):
        def _interpolate_times(
            self, first: Frames, second: Frames, times: Sequence[Fraction]
        ) -> list[Frames]:
            seen.append((self.scale, self.tile))
            return super()._interpolate_times(first, second, times)

    engine = Recording()

    def a_chunk_runs_in_a_pause(done: int, total: int) -> None:
        engine.set_memory(None, None)  # what any chunk leaves its (shared) engine at when it ends

    outcome = interpolate_with_retries(
        engine, *_io(tmp_path), slots, width=64, height=32, batch_size=4, expected_frames=9,
        planned=MemoryStep(0.5, 2, 32), on_batch=a_chunk_runs_in_a_pause,
    )  # fmt: skip
    assert len(seen) > 1
    assert set(seen) == {(0.5, 32)}, "every batch ran at the paused chunk's own plan, its tile included"
    assert (outcome.scale, outcome.batch_size, outcome.tile) == (0.5, 2, 32)
    assert (engine.scale, engine.tile) == (None, None), "the engine is back at its configured settings"
