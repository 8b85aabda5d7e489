"""Scene-cut detection with PySceneDetect's ContentDetector, fed frame by frame."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
from scenedetect import ContentDetector
from scenedetect.common import FrameTimecode


class SceneCuts:
    """Collects the indices of frames that start a new scene."""

    def __init__(self, rate: Fraction, threshold: float, min_frames: int) -> None:
        self._rate = rate
        self._detector = ContentDetector(threshold=threshold, min_scene_len=min_frames)
        self.starts: list[int] = []

    def feed(self, index: int, bgr: npt.NDArray[np.uint8]) -> None:
        """Look at frame `index` (a small BGR image)."""
        for cut in self._detector.process_frame(FrameTimecode(index, self._rate), bgr):
            self.starts.append(int(cut.frame_num))

    def finish(self, last_index: int) -> list[int]:
        """All scene starts after the last frame was fed."""
        post = getattr(self._detector, "post_process", None)
        if callable(post):
            for cut in post(FrameTimecode(last_index, self._rate)) or []:
                self.starts.append(int(cut.frame_num))
        return sorted({s for s in self.starts if s > 0})


def small_bgr(frame: Any, width: int) -> npt.NDArray[np.uint8]:
    """The frame downscaled to `width` (aspect kept) as BGR, what the detector compares."""
    height = max(2, round(frame.height * width / max(1, frame.width)) // 2 * 2)
    return np.asarray(frame.reformat(width=width, height=height, format="bgr24").to_ndarray())
