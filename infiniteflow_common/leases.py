"""Keeping a lease: renewed every third of its length while the work it guards goes on.

Chunks (a worker's claim, `chunks.renew`) and assemblies (a muxer's claim, `jobs.renew_assembly`) are
both held this way. A renewal that finds the lease taken over marks it lost at once. One that fails
(the database unreachable) is tried again at the next third; whether a lease that ran out unrenewed
is lost too is the holder's call (`lost_when_run_out`): a muxer's output key is final, so it must stop
before another muxer may start, while a worker's result is fenced by its epoch when it is recorded and
can go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from infiniteflow_common.observability import get_logger

log = get_logger()
_now = time.monotonic
_sleep = asyncio.sleep


class LostFlag(Protocol):
    """What a lease's holder watches: an `asyncio.Event`, or a `threading.Event` for work in a thread."""

    def set(self) -> None: ...


async def keep_lease(
    renew: Callable[[], Awaitable[bool]],
    *,
    lease_s: float,
    lost: LostFlag,
    what: str,
    lost_when_run_out: bool,
    **fields: Any,
) -> None:
    """Renew a lease secured just now until cancelled; set `lost` once it is not the holder's any more.

    `renew` returns False when the lease was taken over. `what` names the lease in log lines, and
    `fields` (a job id, a chunk index) go with them.
    """
    valid_until = _now() + lease_s
    while True:
        await _sleep(lease_s / 3)
        asked = _now()
        try:
            renewed = await renew()
        except Exception as exc:
            if not lost_when_run_out or _now() < valid_until - lease_s / 6:  # slack for one more try
                log.warning(f"{what} renewal failed", error=str(exc), **fields)
                continue
            log.error(f"{what} could not be renewed before it ran out; stopping", error=str(exc), **fields)
            lost.set()
            return
        if not renewed:
            log.warning(f"{what} was taken over; stopping", **fields)
            lost.set()
            return
        valid_until = asked + lease_s
