"""The job status rules every service relies on: forward only, final is final, cancel before the end."""

from __future__ import annotations

import pytest

from infiniteflow_common.domain import FINAL_STATUSES, JobStatus
from infiniteflow_common.jobs import may_transition

RUNNING = [JobStatus.PENDING, JobStatus.SPLITTING, JobStatus.INTERPOLATING, JobStatus.MUXING]


@pytest.mark.parametrize("current", RUNNING)
def test_a_job_that_has_not_finished_can_be_cancelled(current: JobStatus) -> None:
    assert may_transition(current.value, JobStatus.CANCELLED)


@pytest.mark.parametrize("current", sorted(FINAL_STATUSES))
@pytest.mark.parametrize("target", list(JobStatus))
def test_a_final_job_never_changes_status(current: str, target: JobStatus) -> None:
    assert not may_transition(current, target)


def test_cancelled_is_final() -> None:
    assert JobStatus.CANCELLED.value in FINAL_STATUSES
    for target in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS, JobStatus.FAILED):
        assert not may_transition(JobStatus.CANCELLED.value, target)


def test_running_jobs_only_move_forward_or_stay() -> None:
    for i, current in enumerate(RUNNING):
        for j, target in enumerate(RUNNING):
            assert may_transition(current.value, target) is (j >= i), (current, target)
        assert may_transition(current.value, JobStatus.COMPLETED)
        assert may_transition(current.value, JobStatus.FAILED)
