"""How well the per-chunk self-check predicts true quality: generated clips with known in-between frames.

For each motion speed a textured scene pans at `speed` px per source frame; it is rendered at twice the
rate, so every in-between frame is known. The true score interpolates each source pair at t = 0.5 and
compares with the known frame; the self-check re-creates real source frames from their neighbours (a
doubled interval, as the worker does) without knowing anything. Prints a markdown table.

Usage: .venv/bin/python scripts/selfcheck_vs_truth.py [--engines flow rife] [--size 320x180]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import numpy.typing as npt

from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.engine_registry import EngineCache
from services.gpu_interp.quality import psnr_db, sample_frames, self_check, ssim


def texture(width: int, height: int, seed: int = 3) -> npt.NDArray[np.uint8]:
    """Smooth random colour blobs: motion is visible everywhere."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    big = np.kron(small, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width].astype(np.float32)
    for axis in (0, 1):
        big = (np.roll(big, 2, axis) + 2 * big + np.roll(big, -2, axis)) / 4
    return big.astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engines", nargs="+", default=["flow", "rife"])
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--frames", type=int, default=9, help="source frames per clip")
    parser.add_argument("--speeds", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    engines = EngineCache(WorkerSettings(metrics_port=None))
    print(
        "| engine | motion (px/frame) | true PSNR / SSIM of the in-between frames | self-check PSNR / SSIM |"
    )
    print("|---|---|---|---|")
    for name in args.engines:
        engine = engines.get(name, "fast")
        for speed in args.speeds:
            half = speed // 2
            scene = texture(width + 2 * args.frames * speed, height)
            rendered = [scene[:, k * half : k * half + width] for k in range(2 * args.frames - 1)]
            source, truth = rendered[0::2], rendered[1::2]
            started = time.perf_counter()
            [made] = engine.interpolate_times(np.stack(source[:-1]), np.stack(source[1:]), [0.5])
            true_psnr = float(np.mean([psnr_db(t, np.asarray(m)) for t, m in zip(truth, made, strict=True)]))
            true_ssim = float(np.mean([ssim(t, np.asarray(m)) for t, m in zip(truth, made, strict=True)]))
            interp_s = time.perf_counter() - started
            check = self_check(engine, source.__getitem__, sample_frames(len(source), 3), batch_size=4)
            assert check is not None
            print(
                f"| {name} | {speed} | {true_psnr:.2f} dB / {true_ssim:.4f} | "
                f"{check.psnr_db:.2f} dB / {check.ssim:.4f} (3 frames, {check.seconds / interp_s:.0%} "
                f"of the {len(made)} interpolations' time) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
