"""The quality self-check: re-create real source frames from their neighbours and score them.

Frame i of a chunk is interpolated from frames i − 1 and i + 1 at t = 0.5 and compared with the real
frame i. That is a harder task than the job's own (twice the motion), so the score is a pessimistic
but honest proxy of how well the engine follows this content: a chunk whose re-created frames score
low is one whose in-between frames are likely wrong too. Chunks never span a scene cut, so the three
frames always belong to one scene.

The check costs engine calls, so it is budgeted: at most `budget` (a fraction) of the pair
interpolations the chunk needed anyway, and at most `max_samples` frames. A chunk too short for even
one sample within the budget is not checked.

A check may re-create a window of each frame instead of all of it (`window`, used by `model=auto`,
whose check of both models is the chunk's self-check): the window where the two neighbours differ
most, since that is where interpolation can go wrong; static areas score alike for any engine.

PSNR is computed on the RGB frames at their own bit depth; SSIM is Wang et al. (2004) on luma
(BT.601 weights) with an 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03 — the reference
definition, as OpenCV's documentation computes it with `cv2.GaussianBlur`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from services.gpu_interp.engines.base import InterpolationEngine, peak

PSNR_CAP_DB = 100.0
"""PSNR reported for identical frames (an infinite PSNR would not survive JSON)."""


@dataclass(frozen=True)
class ChunkQuality:
    """The self-check of one chunk: mean scores over `samples` re-created frames, and its cost."""

    psnr_db: float
    ssim: float
    samples: int
    frames: tuple[int, ...]
    seconds: float
    window: tuple[int, int] | None = None  # (height, width) re-created per frame; None: whole frames


def sample_count(frame_count: int, pairs_interpolated: int, budget: float, max_samples: int) -> int:
    """How many frames to re-create: within `budget` × the chunk's own pair interpolations.

    Zero when the chunk has fewer than three frames (no frame with two neighbours) or is too short
    for one sample inside the budget.
    """
    if frame_count < 3 or budget <= 0 or max_samples <= 0:
        return 0
    affordable = math.floor(budget * pairs_interpolated + 1e-9)
    return max(0, min(max_samples, affordable, frame_count - 2))


def sample_frames(frame_count: int, samples: int) -> tuple[int, ...]:
    """`samples` frame indexes spread evenly over 1 … frame_count − 2 (each has both neighbours)."""
    if samples <= 0 or frame_count < 3:
        return ()
    inner = frame_count - 2
    picks = {1 + min(inner - 1, (2 * k + 1) * inner // (2 * samples)) for k in range(samples)}
    return tuple(sorted(picks))


def busiest_window(
    before: npt.NDArray[Any], after: npt.NDArray[Any], size: tuple[int, int]
) -> tuple[int, int]:
    """Top-left (y, x) of the `size` window where `before` and `after` differ most (pure).

    Measured on a grid of at most ~64 cells across the shorter side (cheap at any resolution).
    """
    height, width = before.shape[:2]
    h, w = min(size[0], height), min(size[1], width)
    if (h, w) == (height, width):
        return 0, 0
    step = max(1, min(height, width) // 64)
    diff = np.abs(before[::step, ::step].astype(np.int32) - after[::step, ::step].astype(np.int32))
    grid = diff.reshape(diff.shape[0], diff.shape[1], -1).sum(axis=2, dtype=np.int64)
    total = np.pad(grid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    bh, bw = min(grid.shape[0], max(1, h // step)), min(grid.shape[1], max(1, w // step))
    sums = total[bh:, bw:] - total[:-bh, bw:] - total[bh:, :-bw] + total[:-bh, :-bw]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return min(int(y) * step, height - h), min(int(x) * step, width - w)


def psnr_db(reference: npt.NDArray[Any], test: npt.NDArray[Any]) -> float:
    """PSNR in dB of `test` against `reference` (same shape, integer dtype sets the peak)."""
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    if mse == 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(peak(reference.dtype) ** 2 / mse))


def _luma(rgb: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """BT.601 luma on the 0–255 scale, float32 (what the SSIM constants assume)."""
    scale = np.float32(255.0 / peak(rgb.dtype))
    gray = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    return np.asarray(gray * scale, dtype=np.float32)


def ssim(reference: npt.NDArray[Any], test: npt.NDArray[Any]) -> float:
    """Mean SSIM of the luma of two RGB frames (1.0 for identical frames)."""
    x, y = _luma(reference), _luma(test)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(image: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(cv2.GaussianBlur(image, (11, 11), 1.5), dtype=np.float32)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    return float(np.mean(index, dtype=np.float64))


def self_check(
    engine: InterpolationEngine,
    frame: Callable[[int], npt.NDArray[Any]],
    frames: Sequence[int],
    *,
    batch_size: int,
    window: tuple[int, int] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> ChunkQuality | None:
    """Re-create each of `frames` from its neighbours (via `frame(i)`, RGB) and score it; None if none.

    `window` (height, width): only that much of each frame, where its neighbours differ most
    (`busiest_window`); frames smaller than it are re-created whole.
    """
    if not frames:
        return None
    started = clock()
    crops: dict[int, tuple[slice, slice]] = {}
    size: tuple[int, int] | None = None
    for index in frames:
        before, after = frame(index - 1), frame(index + 1)
        h, w = before.shape[:2]
        if window is not None:
            h, w = min(h, window[0]), min(w, window[1])
            y, x = busiest_window(before, after, (h, w))
        else:
            y = x = 0
        crops[index] = (slice(y, y + h), slice(x, x + w))
        size = (h, w)

    def part(i: int, of: int) -> npt.NDArray[Any]:
        return frame(i)[crops[of]]

    scores: list[tuple[float, float]] = []
    for start in range(0, len(frames), batch_size):
        batch = frames[start : start + batch_size]
        left = np.stack([part(i - 1, i) for i in batch])
        right = np.stack([part(i + 1, i) for i in batch])
        [made] = engine.interpolate_times(left, right, [0.5])
        for row, index in enumerate(batch):
            real = part(index, index)
            guess = np.asarray(made[row])
            scores.append((psnr_db(real, guess), ssim(real, guess)))
    return ChunkQuality(
        psnr_db=float(np.mean([s[0] for s in scores])),
        ssim=float(np.mean([s[1] for s in scores])),
        samples=len(scores),
        frames=tuple(frames),
        seconds=clock() - started,
        window=size if window is not None else None,
    )
