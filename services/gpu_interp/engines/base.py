"""The engine interface: batches of frame pairs and timesteps in, interpolated frames out.

Frames are numpy arrays, `(N, H, W, 3)` (or one `(H, W, 3)` frame), RGB, `uint8` or `uint16`
(the result has the input's dtype and size), or torch tensors `(N, 3, H, W)` of floats in [0, 1]
already on the engine's device (the result is the same kind), so a GPU decoder can skip the host.
`t` is the position of each output between its two frames: 0 is `first`, 1 is `second`.
Engines are stateful (a loaded model), not thread-safe, and cheap to call many times.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

from infiniteflow_common.errors import InfiniteFlowError

if TYPE_CHECKING:
    import torch

FrameArray: TypeAlias = npt.NDArray[Any]
Frames: TypeAlias = "FrameArray | torch.Tensor"
Timestep: TypeAlias = float | Fraction
Timesteps: TypeAlias = Timestep | Sequence[Timestep]


class InterpolationEngine(ABC):
    """Interpolates frames between pairs; subclasses implement `_interpolate_times`."""

    name: str = "engine"

    def interpolate(self, first: Frames, second: Frames, timesteps: Timesteps = 0.5) -> Frames:
        """One output per pair: at `timesteps` (one value for all pairs, or one per pair)."""
        n = _count(first)
        ts = [timesteps] * n if isinstance(timesteps, float | int | Fraction) else list(timesteps)
        if len(ts) != n:
            raise InfiniteFlowError(f"{len(ts)} timesteps for {n} pairs", code="E_INTERP_BAD_INPUT")
        distinct = sorted(set(ts))
        if len(distinct) == 1:
            return self.interpolate_times(first, second, distinct)[0]
        # Mixed timesteps: one engine call per distinct t, each still a batch, then back in order.
        order: list[int] = []
        parts: list[Any] = []
        for t in distinct:
            idx = [i for i, v in enumerate(ts) if v == t]
            order += idx
            parts.append(self.interpolate_times(first[idx], second[idx], [t])[0])
        inverse = np.argsort(np.array(order))
        if isinstance(parts[0], np.ndarray):
            return np.concatenate(parts)[inverse]
        import torch

        return torch.cat(parts)[torch.from_numpy(inverse).to(parts[0].device)]

    def interpolate_times(self, first: Frames, second: Frames, times: Sequence[Timestep]) -> list[Frames]:
        """For every time in `times`, the frames at that time between each pair (shared work reused)."""
        single = isinstance(first, np.ndarray) and first.ndim == 3
        if single:
            first, second = first[None], second[None]
        _check_pair(first, second)
        for t in times:
            if not 0 <= float(t) <= 1:
                raise InfiniteFlowError(f"timestep {t} is outside [0, 1]", code="E_INTERP_BAD_INPUT")
        result = self._interpolate_times(
            first, second, [Fraction(t).limit_denominator(1 << 20) for t in times]
        )
        return [r[0] for r in result] if single else result

    def memory_scale(self, height: int, width: int) -> float | None:
        """The flow-estimation scale used for frames of this size; None for an engine without one."""
        return None

    def set_memory(self, scale: float | None, batch_size: int | None, tile: int | None = None) -> None:
        """Use this flow scale (None: the engine's automatic choice), at most this many pairs per
        forward pass (None: the configured number) and tiles of at most this many pixels a side (None:
        whole frames) from now on; engines without them ignore it."""
        return None

    @contextmanager
    def uncompiled(self) -> Iterator[None]:
        """Run calls inside the block without compiling backends (eager torch).

        For a few calls at a size the chunk never uses (the model choice's check windows): a
        compiling backend converts its network once per input shape, which costs far more than
        the calls themselves. Engines without a compiling backend run as they always do.
        """
        yield

    @abstractmethod
    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        """Batched form: `first`/`second` are 4-D and checked; one result batch per time."""


def _count(frames: Frames) -> int:
    return 1 if isinstance(frames, np.ndarray) and frames.ndim == 3 else int(frames.shape[0])


def _check_pair(first: Frames, second: Frames) -> None:
    if tuple(first.shape) != tuple(second.shape):
        raise InfiniteFlowError(
            f"frame pairs differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}",
            code="E_INTERP_BAD_INPUT",
        )
    if isinstance(first, np.ndarray):
        if first.ndim != 4 or first.shape[-1] != 3:
            raise InfiniteFlowError(
                f"frames must be (N, H, W, 3) RGB arrays, got {first.shape}", code="E_INTERP_BAD_INPUT"
            )
        if first.dtype not in (np.uint8, np.uint16):
            raise InfiniteFlowError(
                f"frames must be uint8 or uint16, got {first.dtype}", code="E_INTERP_BAD_INPUT"
            )


def peak(dtype: np.dtype[Any]) -> float:
    """The value of full white for an integer frame dtype."""
    return float(np.iinfo(dtype).max)
