"""The RIFE 4.25-class model as an engine: every timestep native, padded to 64, with quality modes.

It shares the `rife` engine's settings, quality modes (`fast`, `tta`, `best`: the same flips and
transpositions, averaged) and device/precision rules; only the network differs (`ifnet_v4`). Because
t is an input, each requested time costs one pass and is exact — no bisection, no flow scaling;
`timestep_method` and `bisect_depth` in the settings are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from services.gpu_interp.engines import weights as weights_mod
from services.gpu_interp.engines.base import Frames
from services.gpu_interp.engines.ifnet_v4 import PAD_MULTIPLE, SHRINKS, IFNetV4, remap_published_keys
from services.gpu_interp.engines.rife import (
    AUGMENTS,
    RifeFamilyEngine,
    RifeSettings,
)


class RifeV4Engine(RifeFamilyEngine):
    """RIFE 4.25-class interpolation; the model is built and loaded once, in the constructor."""

    name = "rife"
    model = "v4.25"
    native_timesteps = True
    pad_multiple = PAD_MULTIPLE

    def __init__(
        self, settings: RifeSettings | None = None, weights: weights_mod.WeightsSource | None = None
    ) -> None:
        s = self._configure(settings or RifeSettings())
        net = IFNetV4()
        source = weights or weights_mod.resolve(package=weights_mod.V425_PACKAGE)
        net.load_state_dict(remap_published_keys(weights_mod.load_state_dict(source)))
        net.eval().requires_grad_(False)
        self.autocast_cpu_bf16 = self.device.type == "cpu" and self.dtype == torch.bfloat16
        self.work_dtype = self.dtype if self.device.type == "cuda" else torch.float32
        moved = net.to(self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.net: IFNetV4 = moved.to(self.work_dtype)
        self._estimate_net: Callable[..., tuple[torch.Tensor, torch.Tensor]] = self.net.estimate
        if s.compile:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            self._estimate_net = torch.compile(self.net.estimate, dynamic=False)

    @contextmanager
    def uncompiled(self) -> Iterator[None]:
        compiled, self._estimate_net = self._estimate_net, self.net.estimate
        try:
            yield
        finally:
            self._estimate_net = compiled

    @torch.inference_mode()
    def frames_at(
        self, img0: torch.Tensor, img1: torch.Tensor, times: Sequence[Fraction]
    ) -> list[torch.Tensor]:
        """For each t, the frames at t (N,3,H,W, float, BGR) averaged over the quality mode's transforms."""
        h, w = img0.shape[2:]
        scale = self._scale(h, w)
        multiple = max(PAD_MULTIPLE, int(PAD_MULTIPLE / scale))
        shrinks = tuple(s / scale for s in SHRINKS)
        totals: dict[int, torch.Tensor] = {}
        augments = AUGMENTS[self.settings.quality]
        for forward, inverse in augments:
            a, b = forward(img0), forward(img1)
            ah, aw = a.shape[2:]
            pad = (0, -aw % multiple, 0, -ah % multiple)
            a = F.pad(a, pad, mode="constant").contiguous(memory_format=torch.channels_last)
            b = F.pad(b, pad, mode="constant").contiguous(memory_format=torch.channels_last)
            a, b = a.to(self.work_dtype), b.to(self.work_dtype)
            for k, t in enumerate(times):
                time = a.new_full((1, 1, 1, 1), float(t))
                with torch.autocast("cpu", torch.bfloat16, enabled=self.autocast_cpu_bf16):
                    flow, mask = self._estimate_net(a, b, time, shrinks)
                frame = inverse(
                    self.net.blend(a, b, flow.to(a.dtype), mask.to(a.dtype))[:, :, :ah, :aw].float()
                )
                totals[k] = totals[k] + frame if k in totals else frame
        return [totals[k] / len(augments) for k in range(len(times))]

    def _whole_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        n = int(first.shape[0])
        bs = max(1, self.settings.batch_size)
        inner = [t for t in times if t not in (0, 1)]
        parts: list[list[torch.Tensor]] = [[] for _ in times]
        for start in range(0, n, bs):
            a = self._to_tensor(first[start : start + bs])
            b = self._to_tensor(second[start : start + bs])
            made = dict(zip(inner, self.frames_at(a, b, inner), strict=True)) if inner else {}
            made[Fraction(0)], made[Fraction(1)] = a, b
            for k, t in enumerate(times):
                parts[k].append(made[t])
        return [self._from_tensor(torch.cat(p, 0), first) for p in parts]
