"""A chunk that keeps killing its worker is retried, tried once at the lightest settings, then fails its
job with E_CHUNK_POISON; a restarted worker process is a new worker; a crash point can kill every time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from infiniteflow_common.chaos import crash_point
from infiniteflow_common.failures import permanent_failure
from infiniteflow_common.settings import CommonSettings
from services.gpu_interp.config import PROCESS_TOKEN, WorkerSettings
from services.gpu_interp.poison import AttemptPlan, plan_attempt, poisoned

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("lost", "max_attempts", "plan"),
    [
        (0, 3, AttemptPlan.NORMAL),
        (1, 3, AttemptPlan.NORMAL),
        (2, 3, AttemptPlan.NORMAL),
        (3, 3, AttemptPlan.CONSERVATIVE),
        (4, 3, AttemptPlan.POISON),
        (9, 3, AttemptPlan.POISON),
        (0, 1, AttemptPlan.NORMAL),
        (1, 1, AttemptPlan.CONSERVATIVE),
        (2, 1, AttemptPlan.POISON),
    ],
)
def test_lost_attempts_earn_retries_then_one_conservative_try_then_poison(
    lost: int, max_attempts: int, plan: AttemptPlan
) -> None:
    assert plan_attempt(lost, max_attempts) is plan


def test_the_conservative_try_comes_exactly_once() -> None:
    plans = [plan_attempt(lost, 3) for lost in range(8)]
    assert plans.count(AttemptPlan.CONSERVATIVE) == 1
    assert plans.index(AttemptPlan.POISON) == plans.index(AttemptPlan.CONSERVATIVE) + 1


def test_nonsense_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        plan_attempt(-1, 3)
    with pytest.raises(ValueError, match="out of range"):
        plan_attempt(0, 0)


def test_a_poisoned_chunk_fails_the_job_naming_the_chunk_and_its_attempts() -> None:
    error = poisoned(7, 4, min_scale=0.25)
    assert error.code == "E_CHUNK_POISON"
    assert "chunk 7" in error.message
    assert "all 4 attempts" in error.message
    assert "scale 0.25" in error.message
    assert permanent_failure(error, "gpu_interp") is error, "permanent: the job fails, no retry"


def test_the_default_attempt_limit_is_three() -> None:
    assert WorkerSettings().chunk_max_attempts == 3
    assert WorkerSettings(chunk_max_attempts=5).chunk_max_attempts == 5


def _worker_id_in_a_new_process(env: dict[str, str]) -> str:
    script = "from services.gpu_interp.config import WorkerSettings; print(WorkerSettings().worker_id)"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=os.environ | env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def test_a_restarted_worker_process_is_a_new_worker_even_with_the_same_name() -> None:
    first = _worker_id_in_a_new_process({"WORKER_ID": "pod-7"})
    second = _worker_id_in_a_new_process({"WORKER_ID": "pod-7"})
    assert first.startswith("pod-7-")
    assert second.startswith("pod-7-")
    assert first != second, "a restarted process must not take its predecessor's lease as its own"
    default = _worker_id_in_a_new_process({})
    assert default.startswith(f"{os.uname().nodename}-"), "hostname-pid-token"


def test_one_process_is_one_worker() -> None:
    named = WorkerSettings(worker_id="worker-a")
    assert named.worker_id == f"worker-a-{PROCESS_TOKEN}"
    assert WorkerSettings(worker_id="worker-a").worker_id == named.worker_id
    assert WorkerSettings(worker_id=named.worker_id).worker_id == named.worker_id, "not suffixed twice"
    assert WorkerSettings().worker_id == WorkerSettings().worker_id


def _reach_point(env: dict[str, str], item: str) -> int:
    script = (
        "from infiniteflow_common.chaos import crash_point; from infiniteflow_common.settings import "
        f"CommonSettings; crash_point(CommonSettings(), 'here', {item!r}); crash_point(CommonSettings(), "
        f"'here', {item!r})"
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=os.environ | env, timeout=60, check=False
    ).returncode


def test_a_matching_crash_point_kills_the_process_every_time_and_only_for_its_item(tmp_path: Path) -> None:
    every = {"CRASH_AT": "here", "CRASH_MATCH": "clip.mp4#0"}
    assert _reach_point(every, "clip.mp4#0") == -signal.SIGKILL
    assert _reach_point(every, "clip.mp4#0") == -signal.SIGKILL, "again: no marker spares the next one"
    assert _reach_point(every, "clip.mp4#1") == 0, "another chunk passes"
    once = {"CRASH_AT": "here", "CRASH_MARKER": str(tmp_path / "crashed")}
    assert _reach_point(once, "x") == 137
    assert _reach_point(once, "x") == 0, "a marker crash happens once"


def test_crash_points_do_nothing_unless_named() -> None:
    crash_point(CommonSettings(crash_at=None, crash_match="x"), "here", "x")
    crash_point(CommonSettings(crash_at="elsewhere", crash_match="x"), "here", "x")
