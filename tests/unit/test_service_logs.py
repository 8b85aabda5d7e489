"""A service restarted by `infiniteflow services` (or the soak) keeps its predecessors' logs."""

from __future__ import annotations

from pathlib import Path

from services.supervisor import rotate_log


def test_a_restart_keeps_the_last_three_logs_of_the_service(tmp_path: Path) -> None:
    log = tmp_path / "gpu_interp-1.log"
    for run in range(1, 6):
        rotate_log(log)
        log.write_text(f"run {run}\n")
    assert log.read_text() == "run 5\n"
    assert [(tmp_path / f"gpu_interp-1.log.{n}").read_text() for n in (1, 2, 3)] == [
        "run 4\n",
        "run 3\n",
        "run 2\n",
    ]
    assert not (tmp_path / "gpu_interp-1.log.4").exists()


def test_an_empty_or_missing_log_is_not_rotated(tmp_path: Path) -> None:
    log = tmp_path / "muxer.log"
    rotate_log(log)
    log.touch()
    rotate_log(log)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["muxer.log"]
