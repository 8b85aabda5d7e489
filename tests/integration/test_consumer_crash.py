"""A consumer killed mid-stream loses nothing: its successor resumes at the last committed offset."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from infiniteflow_common.settings import CommonSettings
from tests.integration.kafka_support import committed_offset, private_topic, produce
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _start(topic: str, group: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.consumer_process", topic, group, str(out)], cwd=REPO
    )


def _lines(out: Path) -> list[tuple[int, int]]:
    if not out.exists():
        return []
    return [(int(p), int(o)) for p, o, _ in (line.split() for line in out.read_text().splitlines())]


def test_a_consumer_killed_mid_stream_is_resumed_from_its_last_commit(
    settings: CommonSettings, unique: str, tmp_path: Path
) -> None:
    total = 30
    out = tmp_path / "processed.txt"
    group = f"crash-{unique}"
    with private_topic(settings, f"test.crash.{unique}") as topic:
        produce(settings, topic, [f"m{i}".encode() for i in range(total)])
        first = _start(topic, group, out)
        try:
            eventually_sync(
                lambda: len(_lines(out)) >= 8, 60, "the first consumer to make progress", interval_s=0.1
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        committed = committed_offset(settings, topic, group)
        done_before = {offset for _, offset in _lines(out)}
        assert 0 < committed <= max(done_before) + 1, "commits follow finished work, never run ahead of it"

        second = _start(topic, group, out)
        try:
            eventually_sync(
                lambda: {o for _, o in _lines(out)} >= set(range(total)),
                90,
                "every message to be processed",
                interval_s=0.1,
            )
        finally:
            second.terminate()
            second.wait(10)

    lines = _lines(out)
    successor = [offset for pid, offset in lines if pid == second.pid]
    assert successor[0] == committed, "the successor starts exactly at the committed offset"
    assert {o for _, o in lines} == set(range(total)), "nothing is lost"
    reprocessed = [o for o in successor if o in done_before]
    assert reprocessed == list(range(committed, max(done_before) + 1)), (
        "only what was done but not yet committed is processed twice"
    )
