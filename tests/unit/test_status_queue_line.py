"""`infiniteflow status` tells the user of a queued job where it stands and when it should start."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from services.user_commands import queue_line, status_table


def _queued(position: int, wait_s: float, start: str) -> dict[str, Any]:
    return {
        "position": position,
        "jobs_ahead": position - 1,
        "estimated_wait_s": wait_s,
        "estimated_start": start,
    }


def test_the_line_gives_the_position_the_jobs_ahead_and_the_start_in_utc() -> None:
    line = queue_line(_queued(2, 90.0, "2026-12-04T12:01:30+00:00"))
    assert line == "position 2 (1 job ahead), starts about 12:01 UTC (in 1 min 30 s)"


def test_the_next_job_has_no_job_ahead() -> None:
    line = queue_line(_queued(1, 12.4, "2026-12-04T12:00:12+00:00"))
    assert line == "position 1 (0 jobs ahead), starts about 12:00 UTC (in 12 s)"


def test_the_status_table_has_a_queued_row_only_while_queued() -> None:
    job: dict[str, Any] = {
        "job_id": "j",
        "status": "interpolating",
        "progress": 10,
        "source": {"bucket": "incoming", "key": "a.mp4"},
        "timings": {"created_at": "2026-12-04T12:00:00+00:00", "completed_at": None},
        "queue": _queued(3, 600.0, "2026-12-04T12:10:00+00:00"),
    }
    [line] = [line for line in _text(status_table(job)).splitlines() if line.split()[:1] == ["queued"]]
    assert line.split(None, 1)[1].strip() == queue_line(job["queue"])
    assert "queued" not in _text(status_table(job | {"queue": None}))


def _text(table: Table) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()
