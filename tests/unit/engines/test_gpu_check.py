"""`make gpu-check`'s CPU side: options, the time-budgeted plan, the report, and the no-CUDA exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.gpu_interp import gpu_check
from services.gpu_interp.gpu_check import Case, Report, all_cases, parse_args, plan


def test_the_defaults_ask_for_both_models_both_sizes_three_batches_and_three_backends() -> None:
    args = parse_args([])
    cases = all_cases(args)
    assert len(cases) == 2 * 2 * 3 * 3
    assert {c.backend for c in cases} == {"eager", "compile", "tensorrt"}
    assert args.budget < 8 * 60, "the whole run must fit in 8 minutes"


@pytest.mark.parametrize(
    "argv", [["--batches", "0"], ["--budget", "-1"], ["--models", "v5"], ["--iterations", "0"]]
)
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_the_plan_measures_every_eager_case_first_then_the_1080p_goal_cases() -> None:
    planned = plan(all_cases(parse_args([])), budget_s=10_000, iterations=20)
    backends = [p.case.backend for p in planned]
    assert backends[:12] == ["eager"] * 12
    assert planned[12].case == Case("v4.25", "1080p", 1, "tensorrt")
    assert all(p.skip is None for p in planned)


def test_a_group_pays_its_compile_time_once() -> None:
    cases = [Case("v4.25", "1080p", b, "compile") for b in (1, 4, 8)]
    first, *rest = plan(cases, budget_s=10_000, iterations=20)
    assert first.estimate_s >= gpu_check.SETUP_SECONDS["compile"]
    assert all(p.estimate_s < gpu_check.SETUP_SECONDS["compile"] / 4 for p in rest)


def test_cases_that_do_not_fit_the_budget_or_lack_a_backend_are_skipped_with_the_reason() -> None:
    cases = all_cases(parse_args([]))
    planned = plan(
        cases, budget_s=120, iterations=20, available=lambda b: "not installed" if b == "tensorrt" else None
    )
    ran = [p for p in planned if p.skip is None]
    assert sum(p.estimate_s for p in ran) <= 120
    assert all(p.skip == "not installed" for p in planned if p.case.backend == "tensorrt")
    assert any(p.skip and p.skip.startswith("time budget") for p in planned)
    assert {p.case.backend for p in ran} >= {"eager"}


def test_pytest_summaries_are_read_from_its_last_line() -> None:
    summary = gpu_check.summarise_pytest("....\n3 passed, 1 skipped, 40 deselected in 2.01s\n", 0)
    assert summary == {"ok": True, "returncode": 0, "passed": 3, "skipped": 1, "deselected": 40}
    assert gpu_check.summarise_pytest("1 failed, 2 passed in 1s", 1)["ok"] is False


def test_the_report_is_written_as_markdown_and_json(tmp_path: Path) -> None:
    report = Report(started_at="20261130T000000Z", seconds=12.0)
    report.machine["gpu"] = "NVIDIA H100"
    report.precision.append(
        {
            "model": "v4.25",
            "frames": "UCF101 ×21",
            "fp16_vs_fp32_db": 51.2,
            "fp32_vs_truth_db": 34.08,
            "fp16_vs_truth_db": 34.07,
        }
    )
    report.throughput += [
        {"model": "v4.25", "size": "1080p", "batch": 8, "backend": "tensorrt", "pairs_per_s": 412.5},
        {
            "model": "hdv3",
            "size": "720p",
            "batch": 1,
            "backend": "compile",
            "pairs_per_s": None,
            "note": "skipped: time budget",
        },
    ]
    folder = gpu_check.write_report(report, tmp_path / "out")
    text = (folder / "report.md").read_text()
    assert "| v4.25 | 1080p | 8 | tensorrt | 412.5 |  |" in text
    assert "| hdv3 | 720p | 1 | compile | — | skipped: time budget |" in text
    assert "| v4.25 | UCF101 ×21 | 51.20 | 34.08 | 34.07 |" in text
    assert json.loads((folder / "report.json").read_text())["throughput"][0]["pairs_per_s"] == 412.5


def test_without_cuda_it_says_so_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == gpu_check.NO_CUDA_EXIT
    assert "no CUDA device" in capsys.readouterr().out


def test_a_dry_run_prints_the_plan_anywhere(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--dry-run", "--models", "v4.25", "--sizes", "1080p", "--backends", "eager"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:4] for line in lines] == [["v4.25", "1080p", f"b{b}", "eager"] for b in (1, 4, 8)]
