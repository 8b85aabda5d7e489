"""A worker told to stop finishes a chunk that fits its grace period and hands back one that does not."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from infiniteflow_common.errors import HandedBack, WorkCancelled
from services.gpu_interp.drain import Drain


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_worker_that_is_not_stopping_never_hands_back() -> None:
    clock = Clock()
    drain = Drain(lambda: False, budget_s=1, clock=clock)
    clock.now = 10_000
    drain.check(1, 1000)


def test_a_chunk_that_will_finish_in_time_is_finished() -> None:
    clock, stopping = Clock(), [False]
    drain = Drain(lambda: stopping[0], budget_s=60, clock=clock)
    clock.now = 30  # 30 s for half the pairs: 30 s to go, within 60 s
    stopping[0] = True
    drain.check(50, 100)
    clock.now = 55
    drain.check(95, 100)


def test_a_chunk_that_would_overrun_the_grace_period_is_handed_back_at_once() -> None:
    clock, stopping = Clock(), [False]
    drain = Drain(lambda: stopping[0], budget_s=60, clock=clock)
    clock.now = 30  # 30 s for a tenth: 270 s to go
    stopping[0] = True
    with pytest.raises(HandedBack, match="about 270 s of work left"):
        drain.check(10, 100)


def test_a_chunk_not_yet_started_is_handed_back_untouched_when_the_worker_is_stopping() -> None:
    drain = Drain(lambda: True, budget_s=600, clock=Clock())
    with pytest.raises(HandedBack, match="before the chunk started"):
        drain.check(0, 100)


def test_the_budget_counts_from_when_the_stop_was_first_seen() -> None:
    clock, stopping = Clock(), [True]
    drain = Drain(lambda: stopping[0], budget_s=60, clock=clock)
    clock.now = 10
    drain.check(10, 50)  # 40 s to go, 60 s left
    clock.now = 65  # slowed down: 10 s left of the budget, 11 s of work to go
    with pytest.raises(HandedBack):
        drain.check(50, 60)


def test_a_cancelled_job_stops_its_chunk_at_the_next_batch_even_when_the_worker_is_not_stopping() -> None:
    cancelled = False
    drain = Drain(lambda: False, budget_s=60, clock=Clock(), cancelled=lambda: cancelled)
    drain.check(1, 10)
    cancelled = True
    with pytest.raises(WorkCancelled):
        drain.check(2, 10)
