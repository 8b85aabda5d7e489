"""The `flow` engine: classical motion-compensated interpolation for machines without a GPU.

Per pair: OpenCV DIS optical flow both ways (0→1 and 1→0, on luma), the flows from time t to
each frame by the quadratic combination of both directions from Super SloMo (Jiang et al., 2018:
F_t0 = −t(1−t)·F01 + t²·F10, F_t1 = (1−t)²·F01 − t(1−t)·F10), which averages out much of each
single flow's error, backward warping of both frames, and a blend weighted by time — and, when
`occlusion_px2` is set, by visibility: a pixel whose forward and backward flows disagree
(|F01(x) + F10(x + F01(x))| large) is probably occluded in the other frame and counts less. No
weights, no per-pixel Python; OpenCV does the work on all cores.

The defaults were tuned on the UCF101 development set (docs/benchmarks.md; 33.40 → 34.12 dB at
the old speed): DIS patches of 5×5 pixels instead of the medium preset's 8×8 (+0.4 dB with the
rest: small patches follow small objects and motion edges), no per-patch mean normalisation
(these clips change brightness little, and normalising lets textureless patches match anywhere),
a lighter smoothness term in DIS's variational refinement (alpha 10 instead of 20: sharper motion
edges; 20 undoes most of the gain), and bicubic instead of bilinear resampling of the frames
(+0.09 dB: a half-pixel bilinear shift is a blur). Denser patches (stride 2) add 0.1 dB for 1.5×
the time. The visibility weighting is off by default: with these flows it changed nothing
measurable (UCF101 +0.015 dB without it, the generated clip of bench.py identical) and its four
extra warps cost about a fifth of the engine's time. A ball crossing the sky faster than its own
size is still lost by DIS's coarse levels (the largest remaining gap to RIFE on that set).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from infiniteflow_common.errors import InfiniteFlowError
from services.gpu_interp.engines.base import FrameArray, Frames, InterpolationEngine

Float32Array = npt.NDArray[np.float32]

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@dataclass(frozen=True)
class FlowSettings:
    """`preset`: DIS speed/quality, refined by the three DIS fields below (None: the preset's own);
    `occlusion_px2`: squared flow disagreement (px²) at which a pixel's weight falls to 1/e — large,
    so only real occlusions, not flow noise, shift the blend (None: no visibility weighting, time
    only); `warp`: how frames are resampled."""

    preset: Literal["ultrafast", "fast", "medium"] = "medium"
    patch_size: int | None = 5  # medium's own is 8
    patch_stride: int | None = None  # medium's own (3)
    mean_normalization: bool | None = False  # the presets normalise
    refine_alpha: float | None = 10.0  # smoothness weight of the variational refinement; presets: 20
    occlusion_px2: float | None = None
    warp: Literal["linear", "cubic"] = "cubic"
    threads: int | None = None
    # Flow is estimated on frames shrunk by `scale` and scaled back up (warping stays at full size);
    # None: 1.0 up to 1440p, 0.5 above, which keeps 4K within a CPU worker's time and memory.
    scale: float | None = None


def auto_flow_scale(height: int, width: int) -> float:
    """Flow-estimation scale by frame size: full up to 1440p, half above."""
    return 1.0 if height * width <= 2560 * 1440 else 0.5


class FlowEngine(InterpolationEngine):
    """DIS flow + occlusion-aware blending; frames are numpy arrays (torch tensors are refused)."""

    name = "flow"

    def __init__(self, settings: FlowSettings | None = None) -> None:
        self.settings = settings or FlowSettings()
        self._configured = self.settings
        if self.settings.threads:
            cv2.setNumThreads(self.settings.threads)
        # One DIS instance per direction (an instance keeps per-call buffers), the backward one on a
        # helper thread: OpenCV releases the GIL, and two whole calls at once keep two cores busier
        # than DIS's own parallel loops do on small frames (~1.5× on 320×240 here).
        self._dis: Any = self._make_dis()
        self._dis_back: Any = self._make_dis()
        self._helper: ThreadPoolExecutor | None = None
        self._frame_interp = cv2.INTER_CUBIC if self.settings.warp == "cubic" else cv2.INTER_LINEAR
        self._grid: Float32Array | None = None

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        if not isinstance(first, np.ndarray) or not isinstance(second, np.ndarray):
            raise InfiniteFlowError("the flow engine takes numpy frames", code="E_INTERP_BAD_INPUT")
        outs = [np.empty_like(first) for _ in times]
        for i in range(first.shape[0]):
            for k, frame in enumerate(self.pair_at_times(first[i], second[i], times)):
                outs[k][i] = frame
        return list(outs)

    def memory_scale(self, height: int, width: int) -> float | None:
        return self.settings.scale or auto_flow_scale(height, width)

    def set_memory(self, scale: float | None, batch_size: int | None, tile: int | None = None) -> None:
        # no tiles: DIS's memory is small per pixel (an 8K pair fits whole; the memory plan knows)
        self.settings = replace(self.settings, scale=scale if scale is not None else self._configured.scale)

    def _make_dis(self) -> Any:
        dis = cv2.DISOpticalFlow_create(PRESETS[self.settings.preset])  # type: ignore[attr-defined]
        if self.settings.patch_size is not None:
            dis.setPatchSize(self.settings.patch_size)
        if self.settings.patch_stride is not None:
            dis.setPatchStride(self.settings.patch_stride)
        if self.settings.mean_normalization is not None:
            dis.setUseMeanNormalization(self.settings.mean_normalization)
        if self.settings.refine_alpha is not None:
            dis.setVariationalRefinementAlpha(self.settings.refine_alpha)
        return dis

    def _both_ways(self, ga: npt.NDArray[Any], gb: npt.NDArray[Any]) -> tuple[Float32Array, Float32Array]:
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="flow-dis")
        backward = self._helper.submit(self._dis_back.calc, gb, ga, None)
        forward = self._dis.calc(ga, gb, None)
        return forward, backward.result()

    def flows(self, a: FrameArray, b: FrameArray) -> tuple[Float32Array, Float32Array]:
        """Dense flows 0→1 and 1→0, (H, W, 2) float32 in pixels of the full-size frames."""
        ga, gb = _luma8(a), _luma8(b)
        height, width = ga.shape
        scale = self.memory_scale(height, width) or 1.0
        if scale >= 1:
            return self._both_ways(ga, gb)
        small = (max(8, round(width * scale)), max(8, round(height * scale)))
        sa = cv2.resize(ga, small, interpolation=cv2.INTER_AREA)
        sb = cv2.resize(gb, small, interpolation=cv2.INTER_AREA)
        forward, backward = self._both_ways(sa, sb)
        return _upscale_flow(forward, width, height), _upscale_flow(backward, width, height)

    def pair_at_times(self, a: FrameArray, b: FrameArray, times: Sequence[Fraction]) -> list[FrameArray]:
        """One pair, several times: the flows and visibilities are computed once."""
        f01, f10 = self.flows(a, b)
        occlusion = self.settings.occlusion_px2
        # Visibility of each frame's pixels in the other frame, from forward-backward consistency.
        vis0 = self._visibility(f01, f10, occlusion) if occlusion else None
        vis1 = self._visibility(f10, f01, occlusion) if occlusion else None
        out: list[FrameArray] = []
        for t in times:
            if t == 0:
                out.append(a.copy())
                continue
            if t == 1:
                out.append(b.copy())
                continue
            tf = float(t)
            ft0 = cv2.addWeighted(f10, tf * tf, f01, -tf * (1 - tf), 0.0)
            ft1 = cv2.addWeighted(f01, (1 - tf) * (1 - tf), f10, -tf * (1 - tf), 0.0)
            interp = self._frame_interp
            w0, w1 = self._warp(a, ft0, interp), self._warp(b, ft1, interp)
            if vis0 is None or vis1 is None:
                out.append(np.asarray(cv2.addWeighted(w0, 1 - tf, w1, tf, 0.0)))
                continue
            # The floor keeps a plain average where both sides look occluded (flow failure).
            k0 = self._warp(vis0, ft0) * np.float32(1 - tf) + np.float32(1e-3)
            k1 = self._warp(vis1, ft1) * np.float32(tf) + np.float32(1e-3)
            out.append(_blend(w0, w1, k0, k1))
        return out

    def _visibility(self, forward: Float32Array, backward: Float32Array, scale_px2: float) -> Float32Array:
        """exp(−|F(x) + B(x + F(x))|² / scale_px2): 1 where the two flows agree, → 0 where not."""
        loop = cv2.add(forward, self._warp(backward, forward))
        err = cv2.magnitude(loop[..., 0], loop[..., 1])
        return np.asarray(cv2.exp(cv2.multiply(err, err, scale=-1.0 / scale_px2)), np.float32)

    def _warp(
        self, image: npt.NDArray[Any], flow: npt.NDArray[Any], interp: int = cv2.INTER_LINEAR
    ) -> npt.NDArray[Any]:
        """Backward warp: out(x) = image(x + flow(x)), bilinear (or `interp`), edges replicated."""
        h, w = flow.shape[:2]
        if self._grid is None or self._grid.shape[:2] != (h, w):
            xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            self._grid = np.dstack((xs, ys))
        where = cv2.add(self._grid, flow)  # absolute sampling positions, one (H, W, 2) map
        moved = cv2.remap(image, where, None, interp, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload]
        return np.asarray(moved)


def _upscale_flow(flow: Float32Array, width: int, height: int) -> Float32Array:
    """A flow field estimated on shrunk frames, resized to (height, width) with vectors scaled along."""
    gain = np.array([width / flow.shape[1], height / flow.shape[0]], np.float32)
    big = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.asarray(big * gain, np.float32)


def _blend(w0: FrameArray, w1: FrameArray, k0: Float32Array, k1: Float32Array) -> FrameArray:
    """(k0·w0 + k1·w1) / (k0 + k1), rounded, in the frames' dtype (OpenCV's kernel for 8-bit)."""
    if w0.dtype == np.uint8:
        return np.asarray(cv2.blendLinear(w0, w1, k0, k1))
    top = float(np.iinfo(w0.dtype).max)
    mixed = (w0 * k0[..., None] + w1.astype(np.float32) * k1[..., None]) / (k0 + k1)[..., None]
    result: FrameArray = np.clip(np.rint(mixed), 0, top).astype(w0.dtype)
    return result


def _luma8(frame: FrameArray) -> npt.NDArray[np.uint8]:
    """8-bit luma for DIS (which takes 8-bit single-channel images only)."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY), np.uint8)
