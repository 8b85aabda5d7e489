"""Preemption at batch boundaries: a chunk in hand pauses while a chunk owed a worker runs first.

Fair dispatch (`infiniteflow_common.dispatch`) chooses well whenever a worker is free, but a worker is
free only between chunks: a small job uploaded while every worker is inside a big job's chunk waits for
the rest of one of them. Between two batches of its chunk a worker therefore asks (at most every
`PREEMPT_CHECK_S`) whether a waiting chunk is owed a worker before its own chunk's job; if one is, it
claims that chunk and runs it to its end while its own chunk stands paused, then resumes where it
stopped.

Why pause instead of cutting the chunk (encoding the done part as a piece, planning the rest anew):
the paused chunk loses nothing (its decoder, its encoder and its frames in flight wait as they are),
the plan and the muxer stay as they are, and a chunk has one result per epoch as before. The paused
chunk keeps its lease (renewed as usual) and its memory, which the chunk run meanwhile is planned
around (its baseline is what the worker holds now); one that would not fit is handed back at once
and the paused chunk resumes. Pauses do not nest: a chunk run in a pause is never paused itself.

What it costs the big job: its chunk finishes later by the chunks run in its pause; the fleet's
total work is the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field


@dataclass
class Preemption:
    """The batch-boundary hook of one chunk in hand (called from its worker thread).

    `run_waiting()` runs, on the event loop `loop`, every chunk owed a worker before the chunk in
    hand's job, and returns the seconds they took (0 when none was waiting).
    """

    run_waiting: Callable[[], Coroutine[object, object, float]]
    loop: asyncio.AbstractEventLoop
    every_s: float
    clock: Callable[[], float] = time.monotonic
    paused_s: float = 0.0
    """Seconds the chunk in hand stood paused so far."""
    _asked_at: float = field(init=False)

    def __post_init__(self) -> None:
        self._asked_at = self.clock()

    def check(self, done: int, total: int) -> None:
        """After a batch: run what is owed a worker first, in a pause of this chunk (blocks until done)."""
        if done >= total or self.clock() - self._asked_at < self.every_s:
            return  # the chunk's last batch is done (nothing left to pause), or it asked a moment ago
        paused: float = asyncio.run_coroutine_threadsafe(self.run_waiting(), self.loop).result()
        self.paused_s += paused
        self._asked_at = self.clock()
