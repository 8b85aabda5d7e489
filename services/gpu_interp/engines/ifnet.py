"""IFNet, the flow estimator of RIFE (Huang et al., ECCV 2022), laid out for the published HDv3 weights.

Three refinement levels work coarse to fine (the input is shrunk by 4, 2, then 1 times `scale`^-1).
Each level looks at both frames already warped by the current estimate, plus the current fusion
mask and flows, and predicts a residual for the two flows from the middle frame (to frame 0 and to
frame 1, 4 channels) and for the fusion-mask logit. It runs in both directions — (I0, I1) and
(I1, I0) with the roles of the flows swapped and the mask negated — and averages them, which makes
the model symmetric in time. The result is the two frames backward-warped to the middle and blended
with a sigmoid mask.

Differences from the published code, all with identical arithmetic: channels are zero-padded from 90
to 96, both directions run as one batch, the flow and mask heads share one transposed convolution,
and the no-op resampling at scale 1 and the unused last-level warps are skipped.
`remap_published_keys` translates the published state-dict names and shapes to this layout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import nn

LEVELS = 3
PUBLISHED_WIDTH = 90  # feature channels of every level in the HDv3 weights
# We run 96 channels, the extra ones zero: oneDNN's AVX2/AVX-512 kernels work in blocks of 8/16
# channels (on a 2-core EPYC the whole network ran ~10% faster single-threaded than at 90).
WIDTH = 96
LEVEL_INPUTS = 3 + 3 + 1 + 4  # warped frame 0, warped frame 1, mask logit, flows (t→0, t→1)


class ConvAct(nn.Sequential):
    """3×3 convolution followed by a per-channel PReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1)
        self.act = nn.PReLU(cout)


class Level(nn.Module):
    """One coarse-to-fine step: features at 1/4 of its working size, residual flows and mask out."""

    def __init__(self, cin: int = LEVEL_INPUTS, width: int = WIDTH) -> None:
        super().__init__()
        half = width // 2
        self.down = nn.Sequential(ConvAct(cin, half, 2), ConvAct(half, width, 2))
        self.res = nn.ModuleList(
            nn.Sequential(ConvAct(width, width), ConvAct(width, width)) for _ in range(4)
        )
        # Flow head (4 channels) and mask head (1 channel) fused: their first layers side by side
        # (one half of the channels each), their second layers as one block-diagonal convolution.
        self.head_up = nn.ConvTranspose2d(width, width, 4, 2, 1)
        self.head_act = nn.PReLU(width)
        self.head_out = nn.ConvTranspose2d(width, 5, 4, 2, 1)

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor, shrink: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual (flow, mask logit) at the input's resolution; `shrink` is the working downscale."""
        if shrink != 1:
            x = F.interpolate(x, scale_factor=1 / shrink, mode="bilinear", align_corners=False)
            flow = F.interpolate(flow, scale_factor=1 / shrink, mode="bilinear", align_corners=False) / shrink
        feat = self.down(torch.cat((x, flow), 1))
        for block in self.res:
            feat = block(feat) + feat
        out = self.head_out(self.head_act(self.head_up(feat)))
        if shrink != 1:
            out = F.interpolate(out, scale_factor=shrink, mode="bilinear", align_corners=False)
            out = torch.cat((out[:, :4] * shrink, out[:, 4:]), 1)
        return out[:, :4], out[:, 4:5]


class Warper:
    """Backward warping by a dense flow in pixels (bilinear, border-clamped), with cached base grids."""

    def __init__(self) -> None:
        self._grids: dict[tuple[int, int, str, torch.dtype], torch.Tensor] = {}

    def __call__(self, image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        _, _, h, w = flow.shape
        key = (h, w, str(flow.device), flow.dtype)
        grid = self._grids.get(key)
        if grid is None:
            xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype)
            ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype)
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).unsqueeze(0)
            self._grids[key] = grid
        # pixels → normalised coordinates (align_corners=True: -1 and 1 are the outer pixel centres)
        norm = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], device=flow.device, dtype=flow.dtype)
        sample_at = grid + flow.permute(0, 2, 3, 1) * norm
        return F.grid_sample(image, sample_at, mode="bilinear", padding_mode="border", align_corners=True)

    def blend(
        self, img0: torch.Tensor, img1: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Warp both frames by their flows (t→0, t→1) and mix them with the sigmoid of the mask logit."""
        weight = torch.sigmoid(mask)
        warped0 = self(img0, flow[:, :2])
        warped1 = self(img1, flow[:, 2:4])
        return warped1 + weight * (warped0 - warped1)


def swap_directions(flow: torch.Tensor) -> torch.Tensor:
    """(t→0, t→1) flows as seen from the reversed pair: (t→1, t→0)."""
    return torch.cat((flow[:, 2:4], flow[:, 0:2]), 1)


class IFNet(nn.Module):
    """Estimates mid-frame flows and the fusion mask for a batch of frame pairs (values in [0, 1])."""

    def __init__(self) -> None:
        super().__init__()
        self.levels = nn.ModuleList(Level() for _ in range(LEVELS))
        self.warp = Warper()

    def estimate(
        self, img0: torch.Tensor, img1: torch.Tensor, shrinks: Sequence[float] = (4, 2, 1)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows (N,4,H,W: middle→0, middle→1) and mask logits (N,1,H,W); H, W multiples of 32/scale."""
        n = img0.shape[0]
        flow = img0.new_zeros((n, 4, *img0.shape[2:]))
        mask = img0.new_zeros((n, 1, *img0.shape[2:]))
        warped0, warped1 = img0, img1
        for index, (level, shrink) in enumerate(zip(self.levels, shrinks, strict=True)):
            both = torch.cat(
                (torch.cat((warped0, warped1, mask), 1), torch.cat((warped1, warped0, -mask), 1)), 0
            )
            d_flow, d_mask = level(both, torch.cat((flow, swap_directions(flow)), 0), shrink)
            flow = flow + (d_flow[:n] + swap_directions(d_flow[n:])) / 2
            mask = mask + (d_mask[:n] - d_mask[n:]) / 2
            if index == LEVELS - 1:
                break  # the blend warps with the final flows itself
            warped0 = self.warp(img0, flow[:, :2])
            warped1 = self.warp(img1, flow[:, 2:4])
        return flow, mask

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The middle frame of each pair; `scale` < 1 estimates flow on shrunk frames (large motion, 4K)."""
        flow, mask = self.estimate(img0, img1, tuple(s / scale for s in (4, 2, 1)))
        return self.blend(img0, img1, flow, mask)

    def blend(
        self, img0: torch.Tensor, img1: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Warp both frames by their flows and mix them with the sigmoid of the mask logit."""
        return self.warp.blend(img0, img1, flow, mask)


_PUBLISHED = re.compile(r"^block(\d)\.(.+)$")


def _padded(value: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """`value` in the top-left corner of a zero tensor of `shape`."""
    out = value.new_zeros(tuple(shape))
    out[tuple(slice(0, n) for n in value.shape)] = value
    return out


def remap_published_keys(state: dict[str, torch.Tensor], width: int = WIDTH) -> dict[str, torch.Tensor]:
    """Published HDv3 tensors (`block0.convblock1.0.0.weight`, …) → this module's names and widths.

    Channels beyond the published 90 (45 in the half-width layers) get zero weights, so they stay
    zero and change nothing. The flow head (`conv1`) and mask head (`conv2`) are fused side by side,
    each in its own half of the channels. The teacher block (`block_tea`, training only) is dropped.
    """
    half = width // 2
    out: dict[str, torch.Tensor] = {}
    heads: dict[tuple[int, str], torch.Tensor] = {}
    for key, value in state.items():
        match = _PUBLISHED.match(key)
        if match is None:
            continue  # block_tea.* and anything else the inference model does not have
        level, parts = int(match.group(1)), match.group(2).split(".")
        prefix = f"levels.{level}."
        if parts[0] == "conv0":  # conv0.{i}.{0 conv | 1 prelu}.param
            role = "conv" if parts[2] == "0" else "act"
            cout = half if parts[1] == "0" else width
            shape = (cout, value.shape[1] if parts[1] == "0" else half, 3, 3) if value.ndim == 4 else (cout,)
            out[prefix + f"down.{parts[1]}.{role}.{parts[3]}"] = _padded(value, shape)
        elif parts[0].startswith("convblock"):  # convblock{k}.{j}.{0 conv | 1 prelu}.param
            k, role = parts[0].removeprefix("convblock"), "conv" if parts[2] == "0" else "act"
            shape = (width, width, 3, 3) if value.ndim == 4 else (width,)
            out[prefix + f"res.{k}.{parts[1]}.{role}.{parts[3]}"] = _padded(value, shape)
        elif parts[0] in ("conv1", "conv2"):  # conv1: flow head, conv2: mask head
            heads[(level, ".".join(parts))] = value
        else:
            raise KeyError(f"unexpected key in RIFE weights: {key}")
    for level in sorted({lvl for lvl, _ in heads}):
        h = {name: v for (lvl, name), v in heads.items() if lvl == level}
        prefix = f"levels.{level}."
        up_w = h["conv1.0.weight"].new_zeros((width, width, 4, 4))  # (in, out, k, k): transposed conv
        up_b = up_w.new_zeros(width)
        act = up_w.new_zeros(width)
        out_w = up_w.new_zeros((width, 5, 4, 4))
        for head, offset, channels in (("conv1", 0, slice(0, 4)), ("conv2", half, slice(4, 5))):
            w_up = h[f"{head}.0.weight"]
            inner = slice(offset, offset + w_up.shape[1])
            up_w[: w_up.shape[0], inner] = w_up
            up_b[inner] = h[f"{head}.0.bias"]
            act[inner] = h[f"{head}.1.weight"]
            out_w[inner, channels] = h[f"{head}.2.weight"]
        out[prefix + "head_up.weight"] = up_w
        out[prefix + "head_up.bias"] = up_b
        out[prefix + "head_act.weight"] = act
        out[prefix + "head_out.weight"] = out_w
        out[prefix + "head_out.bias"] = torch.cat((h["conv1.2.bias"], h["conv2.2.bias"]), 0)
    return out
