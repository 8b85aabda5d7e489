"""`infiniteflow services up` keeps the services it starts running, and `services down` stops them for good."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.restart_policy import (
    History,
    RestartPolicy,
    after_exit,
    delay_before_restart,
    exit_reason,
    ran_healthy,
)
from services.supervisor import (
    Layout,
    _alive,
    _running,
    _zombie,
    status_lines,
    stop_all,
    supervise,
    supervisor_pid,
    wait_ready,
)
from tests.support.waiting import eventually_sync

POLICY = RestartPolicy()


def test_the_delay_doubles_with_each_exit_in_a_row_up_to_a_minute() -> None:
    assert [delay_before_restart(n, POLICY) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_a_service_that_ran_a_minute_is_restarted_after_a_second_again() -> None:
    history = History()
    for n in range(4):
        history, delay = after_exit(history, ran_for_s=0.5, now=n * 30.0, policy=POLICY)
    assert delay == 8
    history, delay = after_exit(history, ran_for_s=61, now=200.0, policy=POLICY)
    assert (delay, history.exits_in_a_row, history.restarts) == (1, 1, 5)


def test_five_restarts_within_two_minutes_is_a_crash_loop_restarted_at_the_longest_delay() -> None:
    history = History()
    delays = []
    for now in (0.0, 2.0, 5.0, 10.0, 19.0):
        history, delay = after_exit(history, ran_for_s=1, now=now, policy=POLICY)
        delays.append(delay)
        assert history.crash_looping is (now == 19.0)
    assert delays == [1, 2, 4, 8, 60]
    # it stays reported as crash-looping, however slowly it now fails, until a run lasts a minute
    history, delay = after_exit(history, ran_for_s=30, now=400.0, policy=POLICY)
    assert (history.crash_looping, delay) == (True, 60)
    assert ran_healthy(history, ran_for_s=60, policy=POLICY).crash_looping is False


def test_restarts_spread_over_more_than_two_minutes_are_not_a_crash_loop() -> None:
    history = History()
    for now in (0.0, 40.0, 80.0, 120.0, 160.0):
        history, _ = after_exit(history, ran_for_s=30, now=now, policy=POLICY)
    assert not history.crash_looping


def test_exit_reasons_read_as_words() -> None:
    assert exit_reason(-9) == "killed by signal 9 (SIGKILL: out of memory?)"
    assert exit_reason(-15) == "killed by signal 15 (SIGTERM)"
    assert exit_reason(1) == "exited with status 1"


# a service that needs no Kafka: says it started, as the real ones do, and runs until stopped
STAND_IN = [
    sys.executable,
    "-c",
    'print(\'{"event": "service started"}\', flush=True); import time; time.sleep(120)',
]


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    layout = Layout(tmp_path / "run")
    try:
        yield layout
    finally:  # whatever the test left running
        stop_all(layout=layout)


def _line(layout: Layout, name: str) -> str:
    return next(line for line in status_lines(layout) if line.startswith(f"{name} "))


def test_a_killed_service_is_restarted_and_status_says_why_it_died(layout: Layout) -> None:
    running = supervise(workers=2, layout=layout, command=STAND_IN)
    wait_ready(list(running), timeout_s=10, layout=layout)
    assert sorted(running) == ["gpu_interp-1", "gpu_interp-2", "ingest", "muxer", "notifier", "splitter"]
    supervisor = supervisor_pid(layout)
    assert supervisor is not None
    assert supervisor > 0
    assert (layout.logs / "supervisor.log").exists()

    # a second `services up` starts no second supervisor and no duplicate services
    assert supervise(workers=2, layout=layout, command=STAND_IN) == running
    assert supervisor_pid(layout) == supervisor

    os.kill(running["muxer"], signal.SIGKILL)
    restarted = eventually_sync(
        lambda: (pid := _running(layout).get("muxer")) not in (None, running["muxer"]) and pid,
        10,
        interval_s=0.1,
    )
    assert eventually_sync(lambda: "restarts 1" in _line(layout, "muxer"), 10, interval_s=0.1)
    line = _line(layout, "muxer")
    assert line.startswith(f"muxer          up, pid {restarted}")
    assert "last exit: killed by signal 9" in line
    assert "restarts 0" in _line(layout, "ingest")
    assert "service restarted" in (layout.logs / "supervisor.log").read_text()
    assert (layout.logs / "muxer.log.1").exists(), "the killed run's log is kept"


def test_services_down_stops_the_supervisor_and_the_services_for_good(layout: Layout) -> None:
    running = supervise(workers=1, layout=layout, command=STAND_IN)
    supervisor = supervisor_pid(layout)
    assert supervisor is not None

    assert sorted(stop_all(layout=layout)) == sorted(running)

    time.sleep(2)  # longer than the first restart delay: a supervisor still watching would restart
    assert supervisor_pid(layout) is None
    assert not _alive(supervisor) or _zombie(supervisor)  # our child here: gone, not yet reaped
    assert not any(_alive(pid) for pid in running.values())
    assert _running(layout) == {}
    assert _line(layout, "supervisor").startswith("supervisor     not running")


def test_services_started_before_a_supervisor_died_are_adopted_by_the_next_one(layout: Layout) -> None:
    running = supervise(workers=1, layout=layout, command=STAND_IN)
    first = supervisor_pid(layout)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    eventually_sync(lambda: supervisor_pid(layout) is None, 10, interval_s=0.1)
    assert _running(layout) == running, "the services outlive their supervisor"
    assert "not running" in _line(layout, "supervisor")

    assert supervise(workers=1, layout=layout, command=STAND_IN) == running
    assert supervisor_pid(layout) not in (None, first)
    os.kill(running["ingest"], signal.SIGKILL)
    eventually_sync(
        lambda: _running(layout).get("ingest") not in (None, running["ingest"]), 10, interval_s=0.1
    )
    assert "restarts 1" in _line(layout, "ingest")


def test_a_crash_looping_service_is_reported_as_such_with_why_it_last_exited(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "run")
    layout.supervision.mkdir(parents=True)
    (layout.supervision / "spec.json").write_text(json.dumps([{"name": "splitter", "argv": [], "env": {}}]))
    looping = {"pid": None, "restarts": 6, "last_exit": "exited with status 1", "crash_looping": True}
    (layout.supervision / "state.json").write_text(
        json.dumps({"supervisor": "running", "services": {"splitter": looping | {"restart_in_s": 60.0}}})
    )
    assert _line(layout, "splitter") == (
        "splitter       crash-looping, restarting in 60 s; restarts 6; last exit: exited with status 1"
    )


def test_services_up_with_more_workers_adds_them_and_keeps_the_running_ones(layout: Layout) -> None:
    first = supervise(workers=1, layout=layout, command=STAND_IN)
    second = supervise(workers=2, layout=layout, command=STAND_IN)
    assert {name: second[name] for name in first} == first, "running services are adopted, not restarted"
    assert "gpu_interp-2" in second
    assert supervise(workers=1, layout=layout, command=STAND_IN) == second, "nothing is taken away"


def test_a_service_that_fails_at_once_is_restarted_and_status_says_how_it_exited(layout: Layout) -> None:
    failing = [sys.executable, "-c", "raise SystemExit(1)"]
    supervise(workers=1, layout=layout, command=failing)
    eventually_sync(lambda: "restarts 2" in _line(layout, "ingest"), 15, interval_s=0.1)
    assert "last exit: exited with status 1" in _line(layout, "ingest")
