"""The `flow` engine: classical motion-compensated interpolation for machines without a GPU.

Per pair: OpenCV DIS optical flow both ways (0→1 and 1→0, on luma), the flows from time t to
each frame by the quadratic combination of both directions from Super SloMo (Jiang et al., 2018:
F_t0 = −t(1−t)·F01 + t²·F10, F_t1 = (1−t)²·F01 − t(1−t)·F10), which averages out much of each
single flow's error, backward warping of both frames, and a blend weighted by time and by
visibility: a pixel whose forward and backward flows disagree (|F01(x) + F10(x + F01(x))| large)
is probably occluded in the other frame and counts less. No weights, no per-pixel Python; OpenCV
does the work on all cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from infiniteflow_common.errors import InfiniteFlowError
from services.gpu_interp.engines.base import FrameArray, Frames, InterpolationEngine, peak

Float32Array = npt.NDArray[np.float32]

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@dataclass(frozen=True)
class FlowSettings:
    """`preset`: DIS speed/quality; `occlusion_px2`: squared flow disagreement (px²) at which a pixel's
    weight falls to 1/e — large, so only real occlusions, not flow noise, shift the blend."""

    preset: Literal["ultrafast", "fast", "medium"] = "medium"
    occlusion_px2: float = 100.0
    threads: int | None = None


class FlowEngine(InterpolationEngine):
    """DIS flow + occlusion-aware blending; frames are numpy arrays (torch tensors are refused)."""

    name = "flow"

    def __init__(self, settings: FlowSettings | None = None) -> None:
        self.settings = settings or FlowSettings()
        if self.settings.threads:
            cv2.setNumThreads(self.settings.threads)
        self._dis = cv2.DISOpticalFlow_create(PRESETS[self.settings.preset])
        self._grid: tuple[int, int, Float32Array, Float32Array] | None = None

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        if not isinstance(first, np.ndarray) or not isinstance(second, np.ndarray):
            raise InfiniteFlowError("the flow engine takes numpy frames", code="E_INTERP_BAD_INPUT")
        outs = [np.empty_like(first) for _ in times]
        for i in range(first.shape[0]):
            for k, frame in enumerate(self.pair_at_times(first[i], second[i], times)):
                outs[k][i] = frame
        return list(outs)

    def flows(self, a: FrameArray, b: FrameArray) -> tuple[Float32Array, Float32Array]:
        """Dense flows 0→1 and 1→0, (H, W, 2) float32 in pixels."""
        ga, gb = _luma8(a), _luma8(b)
        return self._dis.calc(ga, gb, None), self._dis.calc(gb, ga, None)

    def pair_at_times(self, a: FrameArray, b: FrameArray, times: Sequence[Fraction]) -> list[FrameArray]:
        """One pair, several times: the flows and visibilities are computed once."""
        f01, f10 = self.flows(a, b)
        # Visibility of each frame's pixels in the other frame, from forward-backward consistency.
        vis0 = self._visibility(f01, f10)
        vis1 = self._visibility(f10, f01)
        top = peak(a.dtype)
        out: list[FrameArray] = []
        for t in times:
            if t == 0:
                out.append(a.copy())
                continue
            if t == 1:
                out.append(b.copy())
                continue
            tf = np.float32(t)
            ft0 = f10 * (tf * tf) - f01 * (tf * (1 - tf))
            ft1 = f01 * ((1 - tf) * (1 - tf)) - f10 * (tf * (1 - tf))
            # Frames warp in their own dtype (fast integer remap), weights in float.
            k0 = self._warp(vis0, ft0) * (1 - tf) + np.float32(1e-3)
            k1 = self._warp(vis1, ft1) * tf + np.float32(1e-3)
            weight0 = cv2.divide(k0, k0 + k1)
            w0 = self._warp(a, ft0).astype(np.float32)
            w1 = self._warp(b, ft1).astype(np.float32)
            blended = w1 + (w0 - w1) * weight0[..., None]
            out.append(np.clip(np.rint(blended), 0, top).astype(a.dtype))
        return out

    def _visibility(self, forward: Float32Array, backward: Float32Array) -> Float32Array:
        """exp(−|F(x) + B(x + F(x))|² / occlusion_px2): 1 where the two flows agree, → 0 where not."""
        loop = forward + self._warp(backward, forward)
        err = cv2.magnitude(loop[..., 0], loop[..., 1])
        vis: Float32Array = cv2.exp(cv2.multiply(err, err, scale=-1.0 / self.settings.occlusion_px2))
        return vis

    def _warp(self, image: npt.NDArray[Any], flow: Float32Array) -> Float32Array:
        """Backward warp: out(x) = image(x + flow(x)), bilinear, edges replicated."""
        h, w = flow.shape[:2]
        if self._grid is None or self._grid[:2] != (h, w):
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            self._grid = (h, w, gx, gy)
        gx, gy = self._grid[2], self._grid[3]
        mx, my = gx + flow[..., 0], gy + flow[..., 1]
        warped: Float32Array = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return warped


def _luma8(frame: FrameArray) -> npt.NDArray[np.uint8]:
    """8-bit luma for DIS (which takes 8-bit single-channel images only)."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    luma: npt.NDArray[np.uint8] = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    return luma
