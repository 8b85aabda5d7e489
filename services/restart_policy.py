"""When the supervisor restarts a service that exited, and when it calls that a crash loop (pure logic).

A service that exits is restarted after a delay that doubles with each exit in a row (1 s, 2 s, … up to
60 s); a run that lasted 60 s counts as healthy and starts the count again. Five restarts within two
minutes make the service `crash-looping`: the supervisor keeps restarting it at the longest delay (a
service that cannot reach Kafka at boot recovers by itself once Kafka is back, so we never give up),
and `infiniteflow services status` says so until a run lasts 60 s.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RestartPolicy:
    """The supervisor's knobs; the defaults are what `infiniteflow services up` uses."""

    first_delay_s: float = 1.0
    max_delay_s: float = 60.0
    healthy_after_s: float = 60.0
    loop_restarts: int = 5
    loop_window_s: float = 120.0


@dataclass(frozen=True)
class History:
    """One service's restarts as the supervisor has seen them (monotonic clock seconds)."""

    restarts: int = 0
    exits_in_a_row: int = 0
    recent_restarts: tuple[float, ...] = ()
    crash_looping: bool = False


def delay_before_restart(exits_in_a_row: int, policy: RestartPolicy) -> float:
    """1 s after the first exit in a row, doubling with each further one, never above the maximum."""
    if exits_in_a_row <= 0:
        return 0.0
    return min(policy.first_delay_s * 2.0 ** (exits_in_a_row - 1), policy.max_delay_s)


def ran_healthy(history: History, ran_for_s: float, policy: RestartPolicy) -> History:
    """A run that has lasted `healthy_after_s` forgives earlier exits: short delays and no crash loop."""
    if ran_for_s < policy.healthy_after_s:
        return history
    return replace(history, exits_in_a_row=0, crash_looping=False)


def after_exit(
    history: History, *, ran_for_s: float, now: float, policy: RestartPolicy
) -> tuple[History, float]:
    """Record an exit and the restart it leads to; returns the new history and the delay before it."""
    history = ran_healthy(history, ran_for_s, policy)
    in_a_row = history.exits_in_a_row + 1
    recent = (*(t for t in history.recent_restarts if now - t < policy.loop_window_s), now)
    looping = history.crash_looping or len(recent) >= policy.loop_restarts
    delay = policy.max_delay_s if looping else delay_before_restart(in_a_row, policy)
    return History(history.restarts + 1, in_a_row, recent, looping), delay


def exit_reason(returncode: int | None) -> str:
    """Why a process ended, in words (`Popen.returncode`: negative is the signal that killed it)."""
    if returncode is None:
        return "exited (status unknown: it was not started by this supervisor)"
    if returncode >= 0:
        return f"exited with status {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "unknown signal"
    if number == signal.SIGKILL:
        return f"killed by signal {number} ({name}: out of memory?)"
    return f"killed by signal {number} ({name})"
