"""Stopping a worker without losing time: finish the chunk in hand if it fits the grace period, else hand it back.

A cancelled job stops its chunks at the next batch, whatever the worker is doing otherwise.

A pod being scaled down gets SIGTERM and a termination grace period. Finishing a chunk that will be done
in time saves its work; a chunk that would not be done in time is better released at once (its lease
cleared, its record left uncommitted) so another worker starts it now rather than after the lease runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from infiniteflow_common.errors import HandedBack, WorkCancelled


@dataclass
class Drain:
    """The finish-or-hand-back decision for one chunk, checked after every batch (thread-safe reads)."""

    stopping: Callable[[], bool]
    budget_s: float
    clock: Callable[[], float] = time.monotonic
    cancelled: Callable[[], bool] = lambda: False
    started_at: float = field(init=False)
    stop_seen_at: float | None = None

    def __post_init__(self) -> None:
        self.started_at = self.clock()

    def check(self, done: int, total: int) -> None:
        """Raise `WorkCancelled` once the job is cancelled, and `HandedBack` when the worker is stopping
        and the chunk would not finish within the budget."""
        if self.cancelled():
            raise WorkCancelled("the job was cancelled; the chunk is abandoned")
        if not self.stopping():
            return
        if done == 0:  # nothing done yet, so nothing to lose: the next owner starts at once
            raise HandedBack("stopping before the chunk started")
        now = self.clock()
        if self.stop_seen_at is None:
            self.stop_seen_at = now
        left = self.budget_s - (now - self.stop_seen_at)
        remaining = (now - self.started_at) / max(done, 1) * max(total - done, 0)
        if remaining > left:
            raise HandedBack(
                f"stopping: about {remaining:.0f} s of work left on the chunk, {max(left, 0):.0f} s "
                "of the grace period left"
            )
