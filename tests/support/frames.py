"""Synthetic frames with known motion: a textured scene and a textured square moving over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

DEVSET = Path(__file__).resolve().parents[3] / "shared" / "data" / "vfi" / "ucf101"

Frame = npt.NDArray[np.uint8]


def texture(height: int, width: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Smooth random texture (blurred noise), values 0–255, so flow has something to track."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
    smooth: npt.NDArray[np.float32] = cv2.GaussianBlur(noise, (0, 0), 2.0)
    lo, hi = smooth.min(), smooth.max()
    return (smooth - lo) * (255.0 / (hi - lo))


def square_scene(height: int, width: int, shift: float, size: int = 16) -> Frame:
    """A bright textured square at x = width/4 + shift over a static textured background."""
    import cv2

    background = texture(height, width, seed=1) * 0.5
    square = texture(size, size, seed=2) * 0.5 + 127.0
    frame = background.copy()
    move = np.float32([[1, 0, width // 4 + shift], [0, 1, (height - size) // 2]])
    layer = cv2.warpAffine(square, move, (width, height), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(np.ones((size, size), np.float32), move, (width, height), flags=cv2.INTER_LINEAR)
    frame = frame * (1 - alpha[..., None]) + layer * alpha[..., None]
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def panned(height: int, width: int, dx: float, dy: float = 0.0) -> Frame:
    """A view of a large texture whose content has moved by (dx, dy) pixels (a camera pan)."""
    import cv2

    big = texture(height + 32, width + 32, seed=3)
    move = np.float32([[1, 0, -16 + dx], [0, 1, -16 + dy]])
    out = cv2.warpAffine(big, move, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mse(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
