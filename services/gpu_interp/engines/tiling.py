"""Overlapping spatial tiles for a frame pair too large for one engine call, and their seamless blend.

A tile is at most `max_tile` pixels a side plus `overlap` on each inner edge, its origin and size
multiples of `multiple` (what the network pads to at its flow scale), so a tile's memory is bounded
whatever the frame size. Overlaps are blended with linear (feathered) weights that fall to zero at a
tile's inner edges, so no seam is visible. The RIFE engines run a pair tile by tile when their memory
step has a tile size (`set_memory`), which the memory plan chooses when nothing fits untiled (issue 20):
only one tile's network work is alive at a time; the blend's accumulators stay frame-sized.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Tile:
    """One tile's window in the frame: rows `y0:y1`, columns `x0:x1`."""

    y0: int
    y1: int
    x0: int
    x1: int


def _spans(size: int, max_tile: int, overlap: int, multiple: int) -> list[tuple[int, int]]:
    count = max(1, math.ceil(size / max_tile))
    if count == 1:
        return [(0, size)]
    step = size / count
    spans = []
    for i in range(count):
        start = 0 if i == 0 else max(0, (int(i * step) - overlap) // multiple * multiple)
        end = (
            size if i == count - 1 else min(size, -(-(int((i + 1) * step) + overlap) // multiple) * multiple)
        )
        spans.append((start, end))
    return spans


def tile_grid(width: int, height: int, *, max_tile: int, overlap: int = 64, multiple: int = 64) -> list[Tile]:
    """The tiles covering a `width`×`height` frame, row by row; one tile when it already fits."""
    return [
        Tile(y0, y1, x0, x1)
        for y0, y1 in _spans(height, max_tile, overlap, multiple)
        for x0, x1 in _spans(width, max_tile, overlap, multiple)
    ]


def _ramp(length: int, start_open: bool, end_open: bool, overlap: int) -> npt.NDArray[np.float32]:
    w = np.ones(length, dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, overlap + 2, dtype=np.float32)[1:-1]
    n = min(overlap, length)
    if start_open:
        w[:n] = np.minimum(w[:n], ramp[:n])
    if end_open:
        w[length - n :] = np.minimum(w[length - n :], ramp[:n][::-1])
    return w


def interpolate_tiled(
    run: Callable[[npt.NDArray[Any], npt.NDArray[Any]], npt.NDArray[Any]],
    first: npt.NDArray[Any],
    second: npt.NDArray[Any],
    tiles: list[Tile],
    *,
    overlap: int = 64,
) -> npt.NDArray[Any]:
    """`run` on each tile of a `(H, W, C)` pair, blended into one `(H, W, C)` frame of the input's dtype."""
    [frame] = interpolate_tiled_times(lambda a, b: [run(a, b)], first, second, tiles, overlap=overlap)
    return frame


def interpolate_tiled_times(
    run: Callable[[npt.NDArray[Any], npt.NDArray[Any]], Sequence[npt.NDArray[Any]]],
    first: npt.NDArray[Any],
    second: npt.NDArray[Any],
    tiles: list[Tile],
    *,
    overlap: int = 64,
) -> list[npt.NDArray[Any]]:
    """`run` (one output per timestep) on each tile of a `(H, W, C)` pair, each output blended into
    one `(H, W, C)` frame of the input's dtype. Frame-sized memory: one float32 accumulator per output
    and one weight plane; the blend is done in place."""
    height, width = first.shape[:2]
    accs: list[npt.NDArray[np.float32]] = []
    weight = np.zeros((height, width, 1), dtype=np.float32)
    for tile in tiles:
        outs = run(first[tile.y0 : tile.y1, tile.x0 : tile.x1], second[tile.y0 : tile.y1, tile.x0 : tile.x1])
        if not accs:
            accs = [np.zeros(first.shape, dtype=np.float32) for _ in outs]
        wy = _ramp(tile.y1 - tile.y0, tile.y0 > 0, tile.y1 < height, overlap)
        wx = _ramp(tile.x1 - tile.x0, tile.x0 > 0, tile.x1 < width, overlap)
        w = (wy[:, None] * wx[None, :])[:, :, None]
        for acc, out in zip(accs, outs, strict=True):
            acc[tile.y0 : tile.y1, tile.x0 : tile.x1] += out.astype(np.float32) * w
        weight[tile.y0 : tile.y1, tile.x0 : tile.x1] += w
    np.maximum(weight, 1e-6, out=weight)
    frames = []
    while accs:
        acc = accs.pop(0)
        acc /= weight
        if np.issubdtype(first.dtype, np.integer):
            np.rint(acc, out=acc)
            np.clip(acc, 0, np.iinfo(first.dtype).max, out=acc)
        frames.append(acc.astype(first.dtype))
        del acc
    return frames


OVERLAP = 64
"""Pixels a tile reaches past each inner edge: context for the flow at the edge, and the blend's ramp."""


def interpolate_pairs_tiled(
    run: Callable[[Any, Any, Sequence[Any]], Sequence[Any]],
    first: npt.NDArray[Any],
    second: npt.NDArray[Any],
    times: Sequence[Any],
    *,
    max_tile: int,
    multiple: int,
    overlap: int = OVERLAP,
) -> list[npt.NDArray[Any]]:
    """An engine's batched call (`run`: `(N, H, W, C)` pairs and times → one batch per time) made pair
    by pair and tile by tile over `(N, H, W, C)` frames: one tile's work is in memory at a time."""
    count, height, width = (int(v) for v in first.shape[:3])
    tiles = tile_grid(width, height, max_tile=max_tile, overlap=overlap, multiple=multiple)
    outs = [np.empty_like(first) for _ in times]
    for i in range(count):

        def one(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
            return [made[0] for made in run(a[None], b[None], times)]

        for k, frame in enumerate(interpolate_tiled_times(one, first[i], second[i], tiles, overlap=overlap)):
            outs[k][i] = frame
    return outs
