"""Keeping a lease: renewed every third of its length; lost when taken over, or when it ran out if the holder says so."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from infiniteflow_common import leases

LEASE_S = 30.0


async def _keep(
    monkeypatch: pytest.MonkeyPatch, answers: list[bool | Exception], *, lost_when_run_out: bool
) -> tuple[bool, list[float]]:
    """Run a keeper on a simulated clock until it stops or has used every answer; whether it set
    lost, and the simulated times at which it asked for a renewal."""
    clock = 0.0
    asked: list[float] = []
    lost = asyncio.Event()

    async def sleep(seconds: float) -> None:
        nonlocal clock
        if len(asked) == len(answers):
            raise asyncio.CancelledError  # every answer given: the holder's work ended
        clock += seconds

    async def renew() -> bool:
        answer = answers[len(asked)]
        asked.append(clock)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(leases, "_now", lambda: clock)
    monkeypatch.setattr(leases, "_sleep", sleep)
    with contextlib.suppress(asyncio.CancelledError):
        await leases.keep_lease(
            renew, lease_s=LEASE_S, lost=lost, what="test lease", lost_when_run_out=lost_when_run_out
        )
    return lost.is_set(), asked


async def test_a_lease_is_renewed_every_third_of_its_length_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    lost, asked = await _keep(monkeypatch, [True, True, True], lost_when_run_out=True)
    assert not lost
    assert asked == [10.0, 20.0, 30.0]


async def test_a_lease_taken_over_is_lost_at_the_first_renewal_that_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lost, asked = await _keep(monkeypatch, [True, False, True], lost_when_run_out=False)
    assert lost
    assert asked == [10.0, 20.0], "it stopped renewing once the lease was another's"


async def test_a_lease_that_runs_out_unrenewed_is_lost_where_the_holder_must_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    down = ConnectionError("the database is unreachable")
    lost, asked = await _keep(monkeypatch, [down] * 5, lost_when_run_out=True)
    assert lost
    assert asked == [10.0, 20.0, 30.0], "given up once the lease secured at 0 s had run out"


async def test_a_worker_whose_lease_runs_out_unrenewed_goes_on_asking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    down = ConnectionError("the database is unreachable")
    lost, asked = await _keep(monkeypatch, [down] * 5 + [True], lost_when_run_out=False)
    assert not lost, "its result is fenced by its epoch when recorded"
    assert len(asked) == 6


async def test_a_renewal_that_fails_once_is_tried_again_while_the_lease_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blip = ConnectionError("a blip")
    lost, asked = await _keep(monkeypatch, [blip, True, blip, blip, True], lost_when_run_out=True)
    assert not lost
    assert asked == [10.0, 20.0, 30.0, 40.0, 50.0]
