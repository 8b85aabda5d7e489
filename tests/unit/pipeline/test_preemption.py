"""Preemption at batch boundaries: when a chunk in hand pauses for chunks owed a worker, and for how long."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from services.gpu_interp.preemption import Preemption


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in its own thread, as the worker's is while its chunk's thread works."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(5)
    running.close()


def test_a_chunk_asks_at_most_once_per_interval_and_adds_up_its_pauses(
    loop: asyncio.AbstractEventLoop,
) -> None:
    clock, asked = _Clock(), []

    async def run_waiting() -> float:
        asked.append(threading.current_thread().name)
        clock.now += 3.0  # the chunks owed a worker ran for 3 s
        return 3.0

    preemption = Preemption(run_waiting, loop, every_s=1.0, clock=clock)
    preemption.check(1, 10)
    assert asked == [], "it asked right at the start of the chunk"
    clock.now = 1.0
    preemption.check(2, 10)
    assert len(asked) == 1
    assert asked[0] != threading.current_thread().name, "the chunks owed a worker run on the event loop"
    clock.now += 0.5
    preemption.check(3, 10)
    assert len(asked) == 1, "the interval counts from the end of the last pause"
    clock.now += 0.5
    preemption.check(4, 10)
    assert (len(asked), preemption.paused_s) == (2, 6.0)


def test_the_last_batch_never_pauses(loop: asyncio.AbstractEventLoop) -> None:
    clock = _Clock()

    async def run_waiting() -> float:
        raise AssertionError("nothing is left of the chunk to pause")

    preemption = Preemption(run_waiting, loop, every_s=1.0, clock=clock)
    clock.now = 5.0
    preemption.check(10, 10)
    assert preemption.paused_s == 0.0


def test_nothing_waiting_leaves_the_chunk_unpaused(loop: asyncio.AbstractEventLoop) -> None:
    clock = _Clock()

    async def run_waiting() -> float:
        return 0.0

    preemption = Preemption(run_waiting, loop, every_s=1.0, clock=clock)
    clock.now = 2.0
    preemption.check(1, 10)
    assert preemption.paused_s == 0.0
