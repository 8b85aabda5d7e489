"""Out-of-memory handling: recognise an OOM, and the ladder of lighter settings a chunk retries with.

A chunk that runs out of GPU memory (`torch.cuda.OutOfMemoryError`) or host memory (`MemoryError`,
an allocator that cannot allocate) is retried on the same worker at a lower flow scale (halving down
to `MIN_SCALE`), then with fewer frame pairs per engine call (halving down to one). Only when the
lightest step fails too does the job fail, with `E_ENGINE_OOM`. The step used is recorded with the
chunk. A lower scale estimates motion on smaller images: less memory and time, a little less detail
in large motion; the frames themselves stay at full resolution.

`SimulatedMemoryLimit` wraps an engine with a pretend memory budget (pairs × pixels × scale² per
call), so the retry path can be exercised deterministically (setting `SIMULATED_MEMORY_PIXELS`).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from infiniteflow_common.errors import InfiniteFlowError
from services.gpu_interp.engines.base import Frames, InterpolationEngine

MIN_SCALE = 0.25
_OOM_TEXT = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
    "failed to allocate",
    "insufficient memory",
    "std::bad_alloc",
)


class EngineOutOfMemory(InfiniteFlowError):  # noqa: N818 - reads as the condition it reports
    """Even the lightest settings ran out of memory: the job fails (retrying the same cannot help)."""

    code = "E_ENGINE_OOM"


@dataclass(frozen=True)
class MemoryStep:
    """Settings for one try: flow scale (None: the engine has none), frame pairs per engine call, and
    the tile side a pair is split into (None: whole frames; set only by the memory plan, `memory_plan`)."""

    scale: float | None
    batch_size: int
    tile: int | None = None


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says GPU or host memory ran out (torch, numpy, OpenCV or the allocator)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    if isinstance(exc, RuntimeError) or type(exc).__name__ == "error":  # torch, cv2.error
        text = str(exc).lower()
        return any(marker in text for marker in _OOM_TEXT)
    return False


def memory_ladder(
    scale: float | None, batch_size: int, *, min_scale: float = MIN_SCALE, tile: int | None = None
) -> list[MemoryStep]:
    """The steps to try in order: as configured, then lower scales, then smaller batches (every step
    keeps the planned `tile`)."""
    steps = [MemoryStep(scale, batch_size, tile)]
    if scale is not None:
        while scale / 2 >= min_scale - 1e-9:
            scale /= 2
            steps.append(MemoryStep(scale, batch_size, tile))
    while batch_size > 1:
        batch_size //= 2
        steps.append(MemoryStep(scale, batch_size, tile))
    return steps


def lightest_step(
    scale: float | None, *, min_scale: float = MIN_SCALE, tile: int | None = None
) -> MemoryStep:
    """The most conservative settings: the lowest flow scale (`min_scale`, or lower if configured so)
    and one frame pair per engine call (in `tile`s when planned so). A chunk whose workers keep dying
    gets one last try with these."""
    return MemoryStep(None if scale is None else min(scale, min_scale), 1, tile)


def release_memory() -> None:
    """Give back what a failed try held: Python garbage and, when torch uses CUDA, its cached blocks."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class SimulatedMemoryLimit(InterpolationEngine):
    """An engine that fails like a real one would above a memory budget, for drills and tests.

    A call needs pairs × height × width × scale² "pixels" (scale 1 for engines without one); above
    `max_pixels` it raises `MemoryError` before the wrapped engine runs.
    """

    def __init__(self, inner: InterpolationEngine, max_pixels: int) -> None:
        self.inner = inner
        self.max_pixels = max_pixels
        self.name = inner.name
        self.settings = getattr(inner, "settings", None)
        self.device = getattr(inner, "device", "cpu")

    def memory_scale(self, height: int, width: int) -> float | None:
        return self.inner.memory_scale(height, width)

    def set_memory(self, scale: float | None, batch_size: int | None, tile: int | None = None) -> None:
        self.inner.set_memory(scale, batch_size, tile)
        self.settings = getattr(self.inner, "settings", None)

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        pairs = int(first.shape[0])
        # numpy frames are (N, H, W, 3), torch tensors (N, 3, H, W)
        height, width = (
            (first.shape[1], first.shape[2]) if isinstance(first, np.ndarray) else first.shape[2:4]
        )
        height, width = int(height), int(width)
        scale = self.inner.memory_scale(height, width) or 1.0
        needed = pairs * height * width * scale * scale
        if needed > self.max_pixels:
            raise MemoryError(
                f"simulated: {pairs} pair(s) of {width}x{height} at scale {scale} need {needed:.0f} "
                f"pixels, over the budget of {self.max_pixels}"
            )
        return self.inner.interpolate_times(first, second, times)
