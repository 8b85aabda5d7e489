"""Benchmark helpers for the RIFE models and `model=auto` (used by `services.gpu_interp.bench`).

`auto` chooses per chunk. On the UCF101 set each triplet is its own chunk of two source frames (the
middle one is the ground truth), which has no frame with two neighbours to check: the rule decides
(hdv3 at t = 1/2). On the generated clip a case's pairs form one chunk of consecutive source frames,
checked within the worker's budget (6 %) or with the budget lifted (100 %); chunks with timesteps
other than 1/2 get the rule either way (see `model_choice`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np

from services.gpu_interp.engines.base import FrameArray, InterpolationEngine
from services.gpu_interp.model_choice import CHOICE_BUDGET, AutoModel, ModelChoice


class ChunkAuto(AutoModel):
    """`AutoModel` that a benchmark hands each chunk to before interpolating it (`prepare`)."""

    def __init__(self, engines: dict[str, InterpolationEngine], budget: float = CHOICE_BUDGET) -> None:
        super().__init__(engines)
        self.budget = budget
        self.choices: list[ModelChoice] = []

    def prepare(self, frames: Sequence[FrameArray], times: Sequence[Fraction]) -> ModelChoice:
        """Choose for a chunk of consecutive source `frames` whose every pair needs `times`."""
        pairs = {i: list(times) for i in range(len(frames) - 1)}
        choice = self.choose(frames.__getitem__, len(frames), pairs, budget=self.budget)
        self.choices.append(choice)
        return choice

    def summary(self) -> str:
        """The distinct choices made so far, e.g. 'hdv3 (rule)'."""
        return ", ".join(sorted({f"{c.model} ({c.chosen_by})" for c in self.choices}))


def auto_pair_fn(auto: ChunkAuto) -> Callable[[FrameArray, FrameArray], FrameArray]:
    """A (first, second) → middle function that treats each pair as a two-frame chunk."""

    def run(a: FrameArray, b: FrameArray) -> FrameArray:
        auto.prepare([a, b], [Fraction(1, 2)])
        out = auto.interpolate(a, b)
        assert isinstance(out, np.ndarray)
        return out

    return run
