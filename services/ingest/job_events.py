"""Job status events pushed by PostgreSQL (LISTEN/NOTIFY) to the API's server-sent event streams.

Migration 0003 makes every change of a job's status, progress or chunk counts `NOTIFY job_events` at
commit. One LISTEN connection per ingest process fans the notifications out to the open streams, so
following a job costs the database nothing while it does not change. A stream still re-reads its job
every `SAFETY_REFRESH_S` seconds, in case a notification was lost while the connection was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from infiniteflow_common.observability import get_logger

log = get_logger()
CHANNEL = "job_events"  # the channel migration 0003's trigger notifies
SAFETY_REFRESH_S = 15.0
RECONNECT_DELAY_S = (0.5, 10.0)


class JobEventHub:
    """Holds the LISTEN connection (in `run_forever`) and the per-job subscriber queues."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn.replace("+asyncpg", "")
        self.connected = asyncio.Event()
        self._subscribers: defaultdict[uuid.UUID, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    @asynccontextmanager
    async def subscribe(self, job_id: uuid.UUID) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """A queue receiving `job_id`'s notifications (payload dicts) while the block runs."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=64)
        self._subscribers[job_id].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[job_id].discard(queue)
            if not self._subscribers[job_id]:
                del self._subscribers[job_id]

    def dispatch(self, payload: str) -> None:
        """Hand one notification to the job's subscribers (a full queue drops it: the reader re-reads
        the job on the next one anyway)."""
        try:
            event = json.loads(payload)
            job_id = uuid.UUID(str(event["job_id"]))
        except (ValueError, KeyError, TypeError):
            log.warning("malformed job event", payload=payload[:200])
            return
        for queue in list(self._subscribers.get(job_id, ())):
            if not queue.full():
                queue.put_nowait(event)

    def _nudge_all(self) -> None:
        for queues in list(self._subscribers.values()):
            for queue in list(queues):
                if not queue.full():
                    queue.put_nowait({"refresh": True})

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self.dispatch(payload)

    async def run_forever(self) -> None:
        """Keep a LISTEN connection open, reconnecting with backoff; closes it when cancelled."""
        import asyncpg

        delay = RECONNECT_DELAY_S[0]
        while True:
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(self.dsn, timeout=10)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("job events: cannot connect", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_DELAY_S[1])
                continue
            try:
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._on_notify)
                self.connected.set()
                self._nudge_all()  # notifications may have been missed while disconnected
                delay = RECONNECT_DELAY_S[0]
                log.info("job events: listening", channel=CHANNEL)
                await lost.wait()
                log.warning("job events: connection lost; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # the API keeps serving; streams fall back to re-reading until we are back
                log.warning("job events: listener failed; reconnecting", error=repr(exc))
                await asyncio.sleep(delay)
            finally:
                self.connected.clear()
                if not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close(timeout=5))
