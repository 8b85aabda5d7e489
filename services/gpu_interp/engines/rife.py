"""The `rife` engine: our IFNet on the published HDv3 weights, batched, padded, with quality modes.

Quality modes (dev-set figures in docs/benchmarks.md):
- `fast`: one pass, identical to the published inference code.
- `tta`: original + horizontal flip + vertical flip, averaged (3 passes).
- `best`: all eight flips/transpositions of the frame (the dihedral group), averaged (8 passes).

Timesteps other than 0.5 (the HDv3 weights know only the middle): powers of two by recursive
bisection (exact); any other t by `flowscale` — scale the middle flows to t and weight the mask by
distance — or by bisection to the nearest dyadic time (`timestep_method`).

Speed: channels_last everywhere, fp16 on CUDA, bf16 autocast on CPUs with native bf16; the
network runs on the backend `backend` picks (engines/accel.py: eager, `torch.compile`, or
OpenVINO on CPUs), with compiled artifacts cached on disk; see docs/benchmarks.md for figures.

Memory: `set_memory` takes the chunk's flow scale, pairs per call and tile size (`memory_plan`); with a
tile, each pair runs tile by tile at the whole frame's flow scale (engines/tiling.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple, TypeGuard

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from infiniteflow_common.errors import InfiniteFlowError
from services.gpu_interp.engines import weights as weights_mod
from services.gpu_interp.engines.accel import Backend, Runner, make_runner, resolve_backend
from services.gpu_interp.engines.base import FrameArray, Frames, InterpolationEngine
from services.gpu_interp.engines.ifnet import IFNet, remap_published_keys
from services.gpu_interp.engines.tiling import interpolate_pairs_tiled

Quality = Literal["fast", "tta", "best"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
TimestepMethod = Literal["auto", "bisect", "flowscale"]

# An augmentation maps (N, C, H, W) → (N, C, H', W') and is its own inverse (flips, transpose).
Augment = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(3)


def _vflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(2)


def _hvflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(2, 3)


def _transpose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(2, 3)


def _transpose_hflip(x: torch.Tensor) -> torch.Tensor:  # its own inverse only with the flip inside
    return x.flip(2, 3).transpose(2, 3)


AUGMENTS: dict[Quality, tuple[tuple[Augment, Augment], ...]] = {
    "fast": ((_identity, _identity),),
    "tta": ((_identity, _identity), (_hflip, _hflip), (_vflip, _vflip)),
    "best": (
        (_identity, _identity),
        (_hflip, _hflip),
        (_vflip, _vflip),
        (_hvflip, _hvflip),
        (_transpose, _transpose),
        (lambda x: x.transpose(2, 3).flip(3), lambda x: x.flip(3).transpose(2, 3)),
        (lambda x: x.transpose(2, 3).flip(2), lambda x: x.flip(2).transpose(2, 3)),
        (_transpose_hflip, _transpose_hflip),
    ),
}


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")


def auto_scale(height: int, width: int, device: str = "cuda") -> float:
    """Flow-estimation scale by frame size: 1.0 up to about 1440p, 0.5 above (4K motion is larger).

    On a CPU, frames above 1440p get 0.25: at 0.5 one 4K pair takes ~40 s and ~4 GB on a 2-core
    machine, so a 48-frame chunk would outlast the consumer's poll interval; 0.25 takes a third.
    """
    if height * width <= 2560 * 1440:
        return 1.0
    return 0.5 if device != "cpu" else 0.25


def choose_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    """The compute dtype: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32 (for `auto`)."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def to_bgr_tensor(frames: Frames, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) RGB integer frames (or an RGB float tensor) as an (N, 3, H, W) BGR float tensor in
    [0, 1]: the published RIFE models were trained on BGR frames (OpenCV)."""
    if isinstance(frames, torch.Tensor):
        return frames.to(device, torch.float32).flip(1)
    top = float(np.iinfo(frames.dtype).max)
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return x.permute(0, 3, 1, 2).float().flip(1).div_(top)


def from_bgr_tensor(x: torch.Tensor, like: Frames) -> Frames:
    """The inverse of `to_bgr_tensor`, in the type and integer depth of `like`."""
    if isinstance(like, torch.Tensor):
        return x.flip(1).clamp_(0, 1)
    top = float(np.iinfo(like.dtype).max)
    out = x.flip(1).permute(0, 2, 3, 1).mul(top).round_().clamp_(0, top)
    return out.to("cpu", torch.int32).numpy().astype(like.dtype)


class Estimator(torch.nn.Module):
    """`IFNet.estimate` at fixed level shrinks, as a module of two tensors (what backends trace)."""

    def __init__(self, net: IFNet, shrinks: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.shrinks = shrinks

    def forward(self, img0: torch.Tensor, img1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.estimate(img0, img1, self.shrinks)


class Estimate(NamedTuple):
    """One augmentation's middle-frame estimate: padded frames, flows, mask logit, unpadded size."""

    img0: torch.Tensor
    img1: torch.Tensor
    flow: torch.Tensor
    mask: torch.Tensor
    size: tuple[int, int]
    inverse: Augment


@dataclass(frozen=True)
class RifeSettings:
    """How the engine runs; every field has a default that suits the machine it lands on."""

    quality: Quality = "fast"
    scale: float | None = None  # None: by resolution (auto_scale)
    device: str | None = None  # None: cuda when available, else cpu
    precision: Precision = "auto"  # auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32
    batch_size: int = 4  # pairs per forward pass
    threads: int | None = None  # CPU threads; None: the cores this process may use
    timestep_method: TimestepMethod = "auto"  # auto: bisection for dyadic t, flowscale otherwise
    bisect_depth: int = 3  # deepest bisection level (1/8) for dyadic t and for `bisect` on other t
    # How the network runs (engines/accel.py). `auto`: OpenVINO on CPUs where it is installed,
    # else eager. `compile`: torch.compile with frozen weights. Both compile once per frame size
    # (about a minute on 2 cores), cached under `cache_dir` across restarts when one is given.
    backend: Backend = "eager"
    compile: bool = False  # the older switch: True means backend="compile"
    cache_dir: Path | None = None
    # Tile side in pixels: each pair runs tile by tile (engines/tiling.py) when a frame is larger,
    # so the network's memory is bounded by the tile (the memory plan's last lever); None: whole frames.
    tile: int | None = None


def set_memory_settings(
    current: RifeSettings,
    configured: RifeSettings,
    scale: float | None,
    batch_size: int | None,
    tile: int | None,
) -> RifeSettings:
    """`current` at this memory step; None for any of them: the configured value."""
    return replace(
        current,
        scale=scale if scale is not None else configured.scale,
        batch_size=batch_size if batch_size is not None else configured.batch_size,
        tile=tile if tile is not None else configured.tile,
    )


def wants_tiles(frames: Frames, tile: int | None) -> TypeGuard[FrameArray]:
    """Whether these frames run tile by tile: a tile size is set and a side is larger (host frames only:
    a tensor already on the device is a CUDA worker's, whose device memory the ladder handles)."""
    return tile is not None and isinstance(frames, np.ndarray) and max(frames.shape[1:3]) > tile


class RifeFamilyEngine(InterpolationEngine):
    """What the RIFE engines share: the flow scale, the memory settings and running a pair in tiles.

    A subclass calls `_configure` with the settings it was built with, sets `pad_multiple` (what its
    network pads a frame to at scale 1), and implements `_whole_times`.
    """

    settings: RifeSettings
    _configured: RifeSettings
    device: torch.device
    dtype: torch.dtype
    pad_multiple: ClassVar[int] = 32

    def _configure(self, settings: RifeSettings) -> RifeSettings:
        """Take `settings` as built with: the device, CPU threads and dtype they ask for."""
        self.settings = self._configured = settings
        self.device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu":
            torch.set_num_threads(settings.threads or len(os.sched_getaffinity(0)))
        self.dtype = self._choose_dtype(settings.precision)
        return settings

    def _scale(self, height: int, width: int) -> float:
        return self.settings.scale or auto_scale(height, width, self.device.type)

    def _choose_dtype(self, precision: Precision) -> torch.dtype:
        return choose_dtype(precision, self.device)

    def _to_tensor(self, frames: Frames) -> torch.Tensor:
        return to_bgr_tensor(frames, self.device)

    def _from_tensor(self, x: torch.Tensor, like: Frames) -> Frames:
        return from_bgr_tensor(x, like)

    def memory_scale(self, height: int, width: int) -> float | None:
        return self._scale(height, width)

    def set_memory(self, scale: float | None, batch_size: int | None, tile: int | None = None) -> None:
        self.settings = set_memory_settings(self.settings, self._configured, scale, batch_size, tile)

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        tile = self.settings.tile
        if not wants_tiles(first, tile):
            return self._whole_times(first, second, times)
        assert tile is not None
        assert isinstance(second, np.ndarray)
        height, width = int(first.shape[1]), int(first.shape[2])
        scale = self._scale(height, width)
        # the tiles at the whole frame's scale: auto_scale would pick one by a tile's size
        settings, self.settings = self.settings, replace(self.settings, scale=scale)
        try:
            multiple = max(self.pad_multiple, int(self.pad_multiple / scale))
            made = interpolate_pairs_tiled(
                self._whole_times, first, second, times, max_tile=tile, multiple=multiple
            )
            return list(made)
        finally:
            self.settings = settings

    def _whole_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        """Every frame at `times` between the pairs, the frames whole (no tiles)."""
        raise NotImplementedError


class RifeEngine(RifeFamilyEngine):
    """RIFE HDv3 interpolation; the model is built and loaded once, in the constructor."""

    name = "rife"

    def __init__(
        self, settings: RifeSettings | None = None, weights: weights_mod.WeightsSource | None = None
    ) -> None:
        s = self._configure(settings or RifeSettings())
        net = IFNet()
        source = weights or weights_mod.resolve()
        net.load_state_dict(remap_published_keys(weights_mod.load_state_dict(source)))
        net.eval().requires_grad_(False)
        # channels_last lets oneDNN / cuDNN pick their fastest convolution kernels.
        self.net = net.to(self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # On CUDA the weights and activations take the reduced dtype; on CPU bf16 runs under
        # autocast (convolutions in bf16, warping and blending in fp32).
        self.autocast_cpu_bf16 = self.device.type == "cpu" and self.dtype == torch.bfloat16
        self.work_dtype = self.dtype if self.device.type == "cuda" else torch.float32
        self.net = self.net.to(self.work_dtype)
        self.backend = resolve_backend("compile" if s.compile else s.backend, self.device)
        if self.backend == "openvino" and self.dtype != torch.float32:
            self.backend = "eager"  # OpenVINO runs fp32 here; bf16 CPUs keep torch's autocast
        self._runners: dict[tuple[float, ...], Runner] = {}
        self._eager = False  # inside `uncompiled()`: the plain module, whatever the backend

    # -- the model ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def _estimate(self, img0: torch.Tensor, img1: torch.Tensor, scale: float) -> list[Estimate]:
        """Per augmentation: the padded augmented frames, flows and mask, and the inverse transform."""
        multiple = max(32, int(32 / scale))
        out = []
        for forward, inverse in AUGMENTS[self.settings.quality]:
            a, b = forward(img0), forward(img1)
            ah, aw = a.shape[2:]
            pad = (0, -aw % multiple, 0, -ah % multiple)
            # channels_last suits torch's oneDNN/cuDNN kernels; OpenVINO takes plain NCHW arrays.
            layout = (
                torch.contiguous_format
                if self.backend == "openvino" and not self._eager
                else torch.channels_last
            )
            a = F.pad(a, pad, mode="replicate").contiguous(memory_format=layout)
            b = F.pad(b, pad, mode="replicate").contiguous(memory_format=layout)
            a, b = a.to(self.work_dtype), b.to(self.work_dtype)
            flow, mask = self._run(a, b, scale)
            out.append(Estimate(a, b, flow, mask, (ah, aw), inverse))
        return out

    @contextmanager
    def uncompiled(self) -> Iterator[None]:
        self._eager, was = True, self._eager
        try:
            yield
        finally:
            self._eager = was

    def _run(self, a: torch.Tensor, b: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        shrinks = tuple(s / scale for s in (4, 2, 1))
        if self._eager:
            with torch.autocast("cpu", torch.bfloat16, enabled=self.autocast_cpu_bf16):
                flow, mask = self.net.estimate(a, b, shrinks)
            return flow, mask
        runner = self._runners.get(shrinks)
        if runner is None:
            s = self.settings
            estimator = Estimator(self.net, shrinks)
            runner = make_runner(estimator, self.backend, self.device, s.cache_dir, s.threads)
            self._runners[shrinks] = runner
        if self.backend == "openvino" and a.shape[0] > 1:
            # One pair per call: a converted model is specialised to its input shape, and batching
            # does not speed up a CPU (compute-bound convolutions), so a batch of 4 and its last
            # partial batch would each cost a conversion for nothing.
            parts = [runner(a[i : i + 1], b[i : i + 1]) for i in range(a.shape[0])]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        with torch.autocast("cpu", torch.bfloat16, enabled=self.autocast_cpu_bf16):
            flow, mask = runner(a, b)
        return flow, mask

    @torch.inference_mode()
    def _synth(
        self,
        estimates: list[Estimate],
        t: Fraction,
    ) -> torch.Tensor:
        """The frame at `t` from the middle-frame estimates, cropped and averaged over augmentations."""
        total: torch.Tensor | None = None
        for a, b, flow, mask, (h, w), inverse in estimates:
            if t == Fraction(1, 2):
                frame = self.net.blend(a, b, flow, mask)
            else:
                # Linear motion: the middle flows, scaled to reach t; the mask leans to the nearer frame.
                scaled = torch.cat((flow[:, :2] * float(2 * t), flow[:, 2:] * float(2 * (1 - t))), 1)
                logit = mask + math.log((1 - t) / t)
                frame = self.net.blend(a, b, scaled, logit)
            frame = inverse(frame[:, :, :h, :w].float())
            total = frame if total is None else total + frame
        assert total is not None
        return total / len(estimates)

    def _middle(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        h, w = img0.shape[2:]
        return self._synth(self._estimate(img0, img1, self._scale(h, w)), Fraction(1, 2))

    # -- timesteps ---------------------------------------------------------------------------------

    def _whole_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        n = int(first.shape[0])
        bs = max(1, self.settings.batch_size)
        parts: list[list[torch.Tensor]] = [[] for _ in times]
        for start in range(0, n, bs):
            a = self._to_tensor(first[start : start + bs])
            b = self._to_tensor(second[start : start + bs])
            for k, frame in enumerate(self._times_for_batch(a, b, times)):
                parts[k].append(frame)
        return [self._from_tensor(torch.cat(p, 0), first) for p in parts]

    def _times_for_batch(
        self, a: torch.Tensor, b: torch.Tensor, times: Sequence[Fraction]
    ) -> list[torch.Tensor]:
        method = self.settings.timestep_method
        depth = self.settings.bisect_depth
        known: dict[Fraction, torch.Tensor] = {Fraction(0): a, Fraction(1): b}
        flowscale_needed = [
            t
            for t in times
            if t not in known and (method == "flowscale" or (method == "auto" and not _dyadic(t, depth)))
        ]
        if flowscale_needed:
            h, w = a.shape[2:]
            estimates = self._estimate(a, b, self._scale(h, w))
            for t in flowscale_needed:
                known[t] = self._synth(estimates, t)
        return [known[t] if t in known else self._bisect(known, t, depth) for t in times]

    def _bisect(self, known: dict[Fraction, torch.Tensor], t: Fraction, depth: int) -> torch.Tensor:
        """Halve [lo, hi] around t, reusing every midpoint already made, until t or `depth` is reached."""
        lo, hi = Fraction(0), Fraction(1)
        for _ in range(depth):
            mid = (lo + hi) / 2
            if mid not in known:
                known[mid] = self._middle(known[lo], known[hi])
            if mid == t:
                return known[mid]
            lo, hi = (lo, mid) if t < mid else (mid, hi)
        nearest = lo if t - lo <= hi - t else hi
        return known[nearest]


def _dyadic(t: Fraction, depth: int) -> bool:
    return (t.denominator & (t.denominator - 1)) == 0 and t.denominator <= (1 << depth)


def load_engine(
    settings: RifeSettings | None = None,
    weights_path: str | Path | None = None,
    weights_sha256: str | None = None,
    download: weights_mod.Downloader | None = None,
) -> RifeEngine:
    """Resolve and verify the weights (packaged, a path, or s3 via `download`), then build the engine."""
    source = weights_mod.resolve(weights_path, weights_sha256, download=download)
    if settings is not None and settings.batch_size < 1:
        raise InfiniteFlowError("batch_size must be at least 1", code="E_INTERP_BAD_SETTINGS")
    return RifeEngine(settings, source)
