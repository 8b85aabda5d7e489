"""Overlapping spatial tiles for a frame pair too large for one engine call, and their seamless blend.

A tile is at most `max_tile` pixels a side plus `overlap` on each inner edge, its origin and size
multiples of `multiple` (what the network pads to at its flow scale), so a tile's memory is bounded
whatever the frame size. Overlaps are blended with linear (feathered) weights that fall to zero at a
tile's inner edges, so no seam is visible. Not yet wired into the engines or the memory plan (issue 20).
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    height, width = first.shape[:2]
    acc = np.zeros(first.shape, dtype=np.float32)
    weight = np.zeros((height, width, 1), dtype=np.float32)
    for tile in tiles:
        out = run(first[tile.y0 : tile.y1, tile.x0 : tile.x1], second[tile.y0 : tile.y1, tile.x0 : tile.x1])
        wy = _ramp(tile.y1 - tile.y0, tile.y0 > 0, tile.y1 < height, overlap)
        wx = _ramp(tile.x1 - tile.x0, tile.x0 > 0, tile.x1 < width, overlap)
        w = (wy[:, None] * wx[None, :])[:, :, None]
        acc[tile.y0 : tile.y1, tile.x0 : tile.x1] += out.astype(np.float32) * w
        weight[tile.y0 : tile.y1, tile.x0 : tile.x1] += w
    blended = acc / np.maximum(weight, 1e-6)
    if np.issubdtype(first.dtype, np.integer):
        blended = np.clip(np.rint(blended), 0, np.iinfo(first.dtype).max)
    return blended.astype(first.dtype)
