"""Overlapping tiles cover the frame, stay bounded, and blend back without a seam."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.gpu_interp.engines.tiling import interpolate_tiled, tile_grid


def test_an_8k_frame_is_split_into_bounded_tiles_that_cover_it() -> None:
    tiles = tile_grid(7680, 4320, max_tile=1920, overlap=64, multiple=64)
    assert len(tiles) == 4 * 3
    covered = np.zeros((4320, 7680), dtype=bool)
    for t in tiles:
        assert t.x1 - t.x0 <= 1920 + 2 * 64 + 64
        assert t.y1 - t.y0 <= 1440 + 2 * 64 + 64
        assert t.x0 % 64 == 0
        assert t.y0 % 64 == 0
        covered[t.y0 : t.y1, t.x0 : t.x1] = True
    assert covered.all()


def test_a_frame_that_fits_is_one_tile() -> None:
    assert len(tile_grid(1920, 1080, max_tile=1920)) == 1


def _blur_mean(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    mid = (a.astype(np.float32) + b.astype(np.float32)) / 2
    k = 5  # a local (non-pointwise) operation, as a network's receptive field is
    padded = np.pad(mid, ((k, k), (k, k), (0, 0)), mode="edge")
    out = sum(padded[k + dy : k + dy + mid.shape[0], k : k + mid.shape[1]] for dy in range(-k, k + 1)) / (
        2 * k + 1
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_tiled_output_matches_the_whole_frame_with_no_seam() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (600, 900, 3), dtype=np.uint8)
    b = np.roll(a, 7, axis=1)
    tiles = tile_grid(900, 600, max_tile=320, overlap=64, multiple=32)
    assert len(tiles) >= 4
    tiled = interpolate_tiled(_blur_mean, a, b, tiles, overlap=64)
    whole = _blur_mean(a, b)
    mse = float(np.mean((tiled.astype(np.float64) - whole.astype(np.float64)) ** 2))
    psnr = 10 * np.log10(255.0**2 / max(mse, 1e-12))
    assert psnr > 35
    # no seam: the error along the tiles' inner edges is no larger than elsewhere
    err = np.abs(tiled.astype(np.int16) - whole.astype(np.int16)).max(axis=2)
    borders = np.zeros(err.shape, dtype=bool)
    for t in tiles:
        for y in (t.y0, t.y1 - 1):
            borders[max(0, y - 2) : y + 3, t.x0 : t.x1] |= 0 < y < err.shape[0] - 1
        for x in (t.x0, t.x1 - 1):
            borders[t.y0 : t.y1, max(0, x - 2) : x + 3] |= 0 < x < err.shape[1] - 1
    assert borders.any()
    assert err[borders].mean() <= err[~borders].mean() + 1.0
