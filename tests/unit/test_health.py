"""Liveness and readiness: what an orchestrator (or the local watchdog) sees of a service process."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, Counter

from infiniteflow_common.health import GroupMembership, Health, start_http_endpoints


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Partition:
    topic: str
    partition: int


def test_a_consumer_that_joined_its_group_is_alive_and_ready() -> None:
    clock = FakeClock()
    health = Health("muxer", group_grace_s=60, clock=clock, membership=GroupMembership(clock=clock))
    health.started = True
    assert health.readiness()[0] is False, "not ready before the group assigned anything"
    health.membership.on_assign(
        None, [Partition("chunk.interpolated", 0), Partition("chunk.interpolated", 3)]
    )  # type: ignore[union-attr]
    clock.now += 3600
    health.beat()
    ready, details = health.readiness()
    assert ready
    assert details["partitions"] == ["chunk.interpolated[0]", "chunk.interpolated[3]"]
    assert health.liveness()[0]


def test_a_member_with_no_partitions_is_still_healthy() -> None:
    clock = FakeClock()
    membership = GroupMembership(clock=clock)
    health = Health("gpu_interp", group_grace_s=60, clock=clock, membership=membership)
    membership.on_assign(None, [])  # more workers than partitions: a legitimate idle member
    clock.now += 600
    health.beat()
    assert health.liveness()[0]


def test_a_consumer_left_outside_its_group_past_the_grace_period_fails_liveness() -> None:
    clock = FakeClock()
    membership = GroupMembership(clock=clock)
    health = Health("muxer", group_grace_s=60, clock=clock, membership=membership)
    membership.on_assign(None, [Partition("chunk.interpolated", 0)])
    membership.on_lost(None, [Partition("chunk.interpolated", 0)])
    clock.now += 59
    health.beat()
    assert health.liveness()[0], "a broker restart shorter than the grace period is ridden out"
    clock.now += 2
    health.beat()
    alive, details = health.liveness()
    assert not alive
    assert "outside its group for 61 s" in details["problems"][0]
    membership.on_assign(None, [Partition("chunk.interpolated", 0)])
    assert health.liveness()[0], "rejoining heals it"


def test_incremental_revocation_keeps_the_other_partitions() -> None:
    membership = GroupMembership()
    membership.on_assign(None, [Partition("chunk.ready", p) for p in range(4)])
    membership.on_revoke(None, [Partition("chunk.ready", 1), Partition("chunk.ready", 2)])
    assert membership.describe() == ["chunk.ready[0]", "chunk.ready[3]"]
    assert membership.out_of_group_for() == 0


def test_a_blocked_event_loop_fails_liveness() -> None:
    clock = FakeClock()
    health = Health("splitter", loop_grace_s=30, clock=clock)
    clock.now += 31
    assert not health.liveness()[0]


async def test_the_watchdog_reports_a_stuck_consumer_once() -> None:
    clock = FakeClock()
    health = Health("muxer", group_grace_s=5, clock=clock, membership=GroupMembership(clock=clock))
    clock.now += 10
    reasons: list[str] = []
    await asyncio.wait_for(health.watch(reasons.append, period_s=0.01), timeout=5)
    assert reasons == ["Kafka consumer outside its group for 10 s"]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a loopback test URL
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_probes_and_metrics_share_one_port() -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    Counter("probe_test_total", "a metric to find", registry=registry).inc()
    health = Health("notifier", group_grace_s=60, clock=clock, membership=GroupMembership(clock=clock))
    port = start_http_endpoints(health, "127.0.0.1", 0, registry)
    base = f"http://127.0.0.1:{port}"
    status, body = _get(f"{base}/readyz")
    assert status == 503
    assert json.loads(body)["ready"] is False
    health.started = True
    health.membership.on_assign(None, [Partition("job.completed", 0)])  # type: ignore[union-attr]
    assert _get(f"{base}/readyz")[0] == 200
    assert _get(f"{base}/healthz")[0] == 200
    assert b"probe_test_total 1.0" in _get(f"{base}/metrics")[1]
    clock.now += 120
    health.membership.on_lost(None, [Partition("job.completed", 0)])  # type: ignore[union-attr]
    clock.now += 61
    health.beat()
    status, body = _get(f"{base}/healthz")
    assert status == 503
    assert json.loads(body)["alive"] is False


@pytest.mark.parametrize("path", ["/", "/metrics"])
def test_any_other_path_serves_metrics(path: str) -> None:
    registry = CollectorRegistry()
    Counter("other_path_total", "x", registry=registry).inc()
    port = start_http_endpoints(Health("ingest"), "127.0.0.1", 0, registry)
    assert b"other_path_total" in _get(f"http://127.0.0.1:{port}{path}")[1]
