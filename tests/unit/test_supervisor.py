"""`infiniteflow services up` keeps the services it starts running, and `services down` stops them for good."""

from __future__ import annotations

from services.restart_policy import (
    History,
    RestartPolicy,
    after_exit,
    delay_before_restart,
    exit_reason,
    ran_healthy,
)

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
