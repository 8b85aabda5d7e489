"""A queued job's place and estimated start: fair dispatch replayed on the chunks running now."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from infiniteflow_common.queue import (
    ANONYMOUS,
    JobLoad,
    RateSample,
    Standing,
    TenantLoad,
    engine_rates,
    queue_view,
    standings,
    tenant_loads,
    work_per_frame_mpix,
)

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def job(
    name: str,
    *,
    tenant: str | None = None,
    weight: float = 1.0,
    priority: int = 0,
    age_s: float = 0,
    waiting: int = 1,
    chunk_s: float = 10.0,
    running_left_s: tuple[float, ...] = (),
) -> JobLoad:
    """A job whose waiting chunks take `chunk_s` each; it has started when something of it runs."""
    return JobLoad(
        job_id=uuid.uuid5(uuid.NAMESPACE_URL, name),
        tenant=tenant,
        weight=weight,
        priority=priority,
        created_at=T0 - timedelta(seconds=age_s),
        started=bool(running_left_s),
        waiting=waiting,
        waiting_s=waiting * chunk_s,
        running_left_s=running_left_s,
    )


def standing_of(jobs: list[JobLoad], name: str) -> Standing:
    return standings(jobs)[uuid.uuid5(uuid.NAMESPACE_URL, name)]


# --- the work model and the rates ------------------------------------------------------------------


def test_the_work_of_a_frame_is_its_pixels_times_the_frames_interpolated_after_it() -> None:
    assert work_per_frame_mpix(1000, 1000, Fraction(30), Fraction(60)) == pytest.approx(1.0)
    assert work_per_frame_mpix(1000, 1000, Fraction(30), Fraction(240)) == pytest.approx(7.0)
    assert work_per_frame_mpix(1000, 1000, Fraction(24), Fraction(60)) == pytest.approx(1.5)


def test_a_copy_only_job_still_counts_a_tenth_of_a_frame_of_work_per_frame() -> None:
    assert work_per_frame_mpix(1000, 1000, Fraction(30), Fraction(30)) == pytest.approx(0.1)


def test_configured_rates_hold_until_enough_chunks_have_finished() -> None:
    configured = {"rife": 0.6, "flow": 2.0}
    few = [RateSample("rife", 2, work_mpix=100.0, seconds=10.0)]
    assert engine_rates(configured, few) == configured


def test_the_measured_rate_is_the_finished_work_over_the_seconds_spent_on_it() -> None:
    samples = [RateSample("rife", 2, 100.0, 10.0), RateSample("rife", 2, 20.0, 10.0)]
    rates = engine_rates({"rife": 0.6, "flow": 2.0}, samples)
    assert rates == {"rife": pytest.approx(6.0), "flow": 2.0}


def test_an_engine_nobody_configured_is_measured_too() -> None:
    assert engine_rates({}, [RateSample("new", 5, 50.0, 25.0)]) == {"new": pytest.approx(2.0)}


# --- positions ---------------------------------------------------------------------------------------


def test_nothing_queued_means_no_standings() -> None:
    assert standings([job("busy", running_left_s=(5.0,), waiting=3)]) == {}


def test_a_job_with_a_chunk_started_is_not_queued() -> None:
    busy = job("busy", running_left_s=(5.0,), waiting=3)
    assert not busy.queued
    assert job("new").queued


def test_queued_jobs_of_a_tenant_start_by_priority_then_age() -> None:
    jobs = [
        job("running", running_left_s=(30.0,), waiting=4),
        job("old-low", age_s=100, priority=-5),
        job("new-high", age_s=10, priority=5),
        job("older", age_s=50),
        job("newer", age_s=40),
    ]
    positions = {name: standing_of(jobs, name).position for name in ("new-high", "older", "newer", "old-low")}
    assert positions == {"new-high": 1, "older": 2, "newer": 3, "old-low": 4}


def test_a_new_job_starts_before_the_next_chunk_of_a_running_job_of_the_same_priority() -> None:
    # dispatch serves the job with the fewest chunks running: the new one has none
    jobs = [job("running", running_left_s=(30.0,), waiting=10), job("new")]
    assert standing_of(jobs, "new") == Standing(position=1, wait_s=30.0)


def test_a_tenant_with_many_jobs_does_not_push_back_another_tenants_one() -> None:
    jobs = [
        job("a-running", tenant="a", running_left_s=(10.0, 20.0), waiting=5),
        *(job(f"a-queued-{n}", tenant="a", age_s=100 - n) for n in range(3)),
        job("b-new", tenant="b", age_s=1),
    ]
    # at 10 s tenant a still runs a chunk and b none: the worker that frees up is b's
    assert standing_of(jobs, "b-new").position == 1
    assert standing_of(jobs, "a-queued-0").position == 2


def test_weight_gives_a_tenant_more_of_the_fleet() -> None:
    jobs = [
        job("a-running", tenant="a", weight=3.0, running_left_s=(10.0, 10.0), waiting=5),
        job("b-running", tenant="b", running_left_s=(11.0,), waiting=5),
        job("a-new", tenant="a", weight=3.0),
        job("b-new", tenant="b"),
    ]
    # at 10 s a's share is 1/3 (one of two chunks ended) and b's 1: a's queued job goes first
    assert standing_of(jobs, "a-new") == Standing(position=1, wait_s=10.0)


# --- estimated starts ----------------------------------------------------------------------------------


def test_with_every_worker_busy_the_next_job_starts_when_the_first_chunk_ends() -> None:
    jobs = [
        job("running", running_left_s=(40.0, 15.0, 25.0), waiting=0),
        job("first"),
        job("second", age_s=-1),
    ]
    assert standing_of(jobs, "first").wait_s == 15.0
    assert standing_of(jobs, "second").wait_s == 25.0


def test_a_higher_priority_job_runs_its_chunks_before_a_lower_one_starts() -> None:
    # one worker: the urgent job takes it at 20 s and keeps it for its 3 chunks of 10 s
    jobs = [
        job("running", running_left_s=(20.0,), waiting=0),
        job("urgent", priority=10, waiting=3, chunk_s=10.0),
        job("later"),
    ]
    assert standing_of(jobs, "urgent") == Standing(1, 20.0)
    assert standing_of(jobs, "later") == Standing(2, 50.0)


def test_a_chunk_past_its_estimate_frees_its_worker_now() -> None:
    jobs = [job("running", running_left_s=(0.0,), waiting=0), job("new")]
    assert standing_of(jobs, "new").wait_s == 0.0


def test_with_nothing_running_one_worker_is_assumed_free_now() -> None:
    jobs = [job("first", waiting=2, chunk_s=30.0, age_s=10), job("second")]
    assert standing_of(jobs, "first") == Standing(1, 0.0)
    # the only worker known to exist takes turns: the never-served job goes after the first's first chunk
    assert standing_of(jobs, "second") == Standing(2, 30.0)


def test_the_api_view_says_when_in_iso_time() -> None:
    view = queue_view(Standing(position=3, wait_s=90.04), T0)
    assert view == {
        "position": 3,
        "jobs_ahead": 2,
        "estimated_wait_s": 90.0,
        "estimated_start": "2026-12-04T12:01:30.040000+00:00",
    }
    assert queue_view(None, T0) is None


# --- per tenant ------------------------------------------------------------------------------------------


def test_tenant_loads_add_up_each_tenants_jobs_and_keep_idle_tenants_at_zero() -> None:
    jobs = [
        job("a1", tenant="a", waiting=2, chunk_s=5.0, running_left_s=(1.0,)),
        job("a2", tenant="a", waiting=1, chunk_s=7.0),
        job("anon", waiting=4, chunk_s=1.0),
    ]
    assert tenant_loads(jobs, tenants=["a", "idle"]) == {
        "a": TenantLoad(waiting=3, waiting_s=17.0, running=1),
        "idle": TenantLoad(),
        ANONYMOUS: TenantLoad(waiting=4, waiting_s=4.0, running=0),
    }
