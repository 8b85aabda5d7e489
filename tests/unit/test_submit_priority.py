"""`infiniteflow submit --priority N` sends the job's priority; a value outside −50…50 never leaves the machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.progress import Progress
from typer.testing import CliRunner

from services import user_commands
from services.cli import app


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The options each upload would have posted (no server is contacted)."""
    calls: list[dict[str, str]] = []

    def fake_upload(client: httpx.Client, video: Path, options: dict[str, str], progress: Progress) -> Any:
        calls.append(options)
        return {"job_id": "j", "status": "pending", "status_url": "/api/status/j"}

    monkeypatch.setattr(user_commands, "upload", fake_upload)
    return calls


def _submit(tmp_path: Path, *args: str) -> Any:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    return CliRunner().invoke(app, ["submit", str(clip), "--api-url", "http://api.test", *args])


def test_the_priority_is_sent_as_the_priority_form_field(tmp_path: Path, sent: list[dict[str, str]]) -> None:
    result = _submit(tmp_path, "--priority", "-20")

    assert result.exit_code == 0, result.output
    assert sent == [{"priority": "-20"}]


def test_without_priority_the_server_default_applies(tmp_path: Path, sent: list[dict[str, str]]) -> None:
    assert _submit(tmp_path).exit_code == 0
    assert sent == [{}]


@pytest.mark.parametrize("priority", ["51", "-51", "high"])
def test_a_priority_outside_minus_50_to_50_is_refused_before_uploading(
    tmp_path: Path, sent: list[dict[str, str]], priority: str
) -> None:
    result = _submit(tmp_path, "--priority", priority)

    assert result.exit_code == 2
    assert "--priority" in result.output
    assert sent == []
