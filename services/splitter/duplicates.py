"""Duplicated frames: find them, so the plan can skip them and interpolate across the real motion.

A frame whose small luma image differs from the last distinct frame's by less than a threshold (mean
absolute difference, 0–255) repeats it: an exact copy scores 0; a copy re-encoded by a lossy codec
scores a fraction of a level, while a real 1-pixel pan of a textured scene scores several. Skipped
frames keep their time slots: the plan places the kept frames at their own positions, so the
output has as many frames, and lasts as long, as without skipping.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt


class DuplicateDetector:
    """Fed small BGR frames in decoded order; `distinct[i]` says whether frame i shows something new."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.distinct: list[bool] = []
        self._reference: npt.NDArray[np.uint8] | None = None

    def feed(self, bgr: npt.NDArray[np.uint8]) -> None:
        """Look at the next decoded frame."""
        gray = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), np.uint8)
        if self._reference is None or float(cv2.absdiff(gray, self._reference).mean()) >= self.threshold:
            self._reference = gray
            self.distinct.append(True)
        else:
            self.distinct.append(False)


def kept_frames(source_of: Sequence[int], distinct: Sequence[bool]) -> list[int]:
    """The planning indices to keep: the first showing of each distinct decoded frame (and frame 0).

    `source_of[c]` is the decoded frame shown at planning index c (a CFR conversion may repeat or
    drop decoded frames); a repeat of the previous index or a duplicate decoded frame is skipped.
    """
    kept: list[int] = []
    previous: int | None = None
    for index, decoded in enumerate(source_of):
        if index == 0 or (decoded != previous and distinct[decoded]):
            kept.append(index)
        previous = decoded
    return kept


def kept_scene_starts(scene_starts: Sequence[int], kept: Sequence[int]) -> list[int]:
    """Scene starts (planning indices) as indices into `kept`: the first kept frame at or after each."""
    mapped = {bisect_left(kept, start) for start in scene_starts}
    return sorted(j for j in mapped if 0 < j < len(kept))
