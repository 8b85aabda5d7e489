"""What model choice and self-checks cost a job, as the status API's timings show it (pure)."""

from __future__ import annotations

from infiniteflow_common.reports import CHECK_BUDGET, CheckCosts, check_view
from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.model_choice import CHOICE_BUDGET


def test_the_share_of_checks_is_reported_against_the_budget() -> None:
    view = check_view(CheckCosts(chunks=3, engine_s=300.0, model_choice_s=6.0, quality_s=3.0))
    assert view == {
        "chunks": 3,
        "engine_s": 300.0,
        "model_choice_seconds": 6.0,
        "quality_seconds": 3.0,
        "share": 0.03,
        "budget": 0.06,
    }


def test_a_job_without_finished_chunks_has_no_checks_block() -> None:
    assert check_view(None) is None
    assert check_view(CheckCosts(chunks=0, engine_s=0.0, model_choice_s=0.0, quality_s=0.0)) is None


def test_the_reported_budget_is_the_workers() -> None:
    assert CHECK_BUDGET == CHOICE_BUDGET == WorkerSettings().model_choice_budget
