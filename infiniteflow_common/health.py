"""Liveness and readiness of a service process, served beside /metrics.

`/healthz` (liveness) fails when the process can no longer make progress on its own: its event loop
stopped turning, or its Kafka consumer has been outside its group for longer than the grace period
(seen after a broker restart: librdkafka kept the member out of the group and it never consumed again).
An orchestrator restarts a process that fails liveness; the local watchdog does the same by stopping
the process. `/readyz` (readiness) says the process has started and, if it consumes, has joined its group.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from infiniteflow_common.observability import get_logger

log = get_logger()

Clock = Callable[[], float]


@dataclass
class GroupMembership:
    """What the group coordinator last told this consumer, fed by librdkafka's rebalance callbacks.

    The callbacks run on the consumer's polling thread; readers take the lock.
    """

    clock: Clock = time.monotonic
    assigned: set[tuple[str, int]] = field(default_factory=set)
    member: bool = False
    since: float = field(init=False)
    rebalances: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.since = self.clock()

    def on_assign(self, _consumer: Any, partitions: Iterable[Any]) -> None:
        """Partitions were (incrementally, under cooperative rebalancing) given to this member."""
        with self._lock:
            self.assigned |= {(p.topic, p.partition) for p in partitions}
            self.member = True
            self.since = self.clock()
            self.rebalances += 1
        log.info("partitions assigned", partitions=self.describe())

    def on_revoke(self, _consumer: Any, partitions: Iterable[Any]) -> None:
        """Partitions were taken back in a rebalance; the member is still in the group."""
        with self._lock:
            self.assigned -= {(p.topic, p.partition) for p in partitions}
            self.rebalances += 1
        log.info("partitions revoked", partitions=self.describe())

    def on_lost(self, _consumer: Any, partitions: Iterable[Any]) -> None:
        """The member fell out of the group (session timeout, coordinator gone) and lost its partitions."""
        with self._lock:
            self.assigned -= {(p.topic, p.partition) for p in partitions}
            self.member = False
            self.since = self.clock()
        log.warning("partitions lost; rejoining the group", lost=len(list(partitions)))

    def describe(self) -> list[str]:
        """The assigned partitions as `topic[partition]`, sorted."""
        with self._lock:
            return sorted(f"{t}[{p}]" for t, p in self.assigned)

    def out_of_group_for(self) -> float:
        """Seconds since this consumer last was a group member (0 while it is one)."""
        with self._lock:
            return 0.0 if self.member else self.clock() - self.since


@dataclass
class Health:
    """The checks behind /healthz and /readyz for one process."""

    service: str
    # Seconds a consumer may stay outside its group (startup, broker restart) before it counts as stuck.
    group_grace_s: float = 180.0
    # Seconds the event loop may go without a heartbeat before it counts as blocked.
    loop_grace_s: float = 60.0
    clock: Clock = time.monotonic
    membership: GroupMembership | None = None
    started: bool = False
    _loop_beat: float = field(init=False)

    def __post_init__(self) -> None:
        self._loop_beat = self.clock()

    def beat(self) -> None:
        """Called from the event loop: it is still turning."""
        self._loop_beat = self.clock()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """(alive, details): False means only a restart will help."""
        problems: list[str] = []
        loop_silent = self.clock() - self._loop_beat
        if loop_silent > self.loop_grace_s:
            problems.append(f"event loop silent for {loop_silent:.0f} s")
        if self.membership is not None:
            outside = self.membership.out_of_group_for()
            if outside > self.group_grace_s:
                problems.append(f"Kafka consumer outside its group for {outside:.0f} s")
        return not problems, {"service": self.service, "alive": not problems, "problems": problems}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details): started, and a member of its consumer group if it consumes."""
        in_group = self.membership is None or self.membership.member
        ready = self.started and in_group
        details: dict[str, Any] = {"service": self.service, "ready": ready, "started": self.started}
        if self.membership is not None:
            details["group_member"] = self.membership.member
            details["partitions"] = self.membership.describe()
        return ready, details

    async def watch(self, on_stuck: Callable[[str], None], period_s: float = 1.0) -> None:
        """Beat for the event loop and call `on_stuck` once liveness fails (so the process restarts)."""
        while True:
            self.beat()
            alive, details = self.liveness()
            if not alive:
                on_stuck("; ".join(details["problems"]))
                return
            await asyncio.sleep(period_s)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the logs."""


def start_http_endpoints(health: Health, host: str, port: int, registry: CollectorRegistry = REGISTRY) -> int:
    """Serve /metrics, /healthz and /readyz on host:port (0 picks a free port); returns the bound port."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, details = health.liveness() if path == "/healthz" else health.readiness()
            body = json.dumps(details).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="http-endpoints", daemon=True)
    thread.start()
    return int(server.server_port)
