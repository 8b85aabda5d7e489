"""Planning that streams, on the real stack: a long upload's first chunks reach the workers while the
splitter is still reading it, its consumer never holds the upload's record through the pass, a split
whose splitter dies is taken over once and yields the same plan, and cancelling stops a pass (issue 23).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.jobs import job_row, wait_for_job
from tests.support.pipeline import REPO, running_pipeline, start_service
from tests.support.waiting import eventually

pytestmark = WHOLE_PIPELINE


def long_clip(path: Path, *, seconds: int, width: int = 1280, height: int = 720) -> Path:
    """A camera-like H.264 clip with a scene cut every 10 s (two test patterns taking turns)."""
    parts = []
    for start in range(0, seconds, 10):
        source = "testsrc2" if (start // 10) % 2 == 0 else "smptehdbars"
        parts.append(f"{source}=size={width}x{height}:rate=30:duration={min(10, seconds - start)}")
    inputs = [arg for part in parts for arg in ("-f", "lavfi", "-i", part)]
    concat = "".join(f"[{i}:v]" for i in range(len(parts))) + f"concat=n={len(parts)}:v=1:a=0[v]"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *inputs, "-filter_complex", concat, "-map", "[v]",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


async def _fetch(settings: CommonSettings, query: str, *args: Any) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        return [dict(row) for row in await connection.fetch(query, *args)]
    finally:
        await connection.close()


async def _chunks(settings: CommonSettings, job_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await _fetch(
        settings,
        "select chunk_index, first_frame, frame_count, started_at, spec from chunks"
        " where job_id = $1 order by chunk_index",
        job_id,
    )
    return [row | {"spec": json.loads(row["spec"])} for row in rows]


def _cancel(job_id: uuid.UUID) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from services.cli import main; main()", "cancel", str(job_id)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


async def _upload(settings: CommonSettings, clip: Path, key: str) -> dict[str, Any]:
    make_client(settings).fput_object(settings.incoming_bucket, key, str(clip), metadata={"engine": "flow"})

    async def job() -> dict[str, Any] | None:
        return await job_row(settings, key=key)

    found: dict[str, Any] = await eventually(job, 60, f"a job for {key}")
    return found


async def _split_of(settings: CommonSettings, job_id: uuid.UUID, timeout_s: float) -> dict[str, Any]:
    async def split() -> dict[str, Any] | None:
        row = await job_row(settings, job_id=str(job_id))
        return row if row and (row["split_at"] or row["status"] in ("failed", "cancelled")) else None

    row: dict[str, Any] = await eventually(split, timeout_s, "the split to end")
    return row


async def test_a_long_upload_reaches_a_worker_while_it_is_split_and_its_record_is_never_held(
    settings: CommonSettings, tmp_path: Path
) -> None:
    clip = long_clip(tmp_path / "long.mp4", seconds=120)  # 3600 frames of 720p
    key = f"stream/{uuid.uuid4().hex[:8]}/long.mp4"
    logs = tmp_path / "logs"
    # The consumer may go 10 s between polls; the pass takes longer than that on this machine.
    with running_pipeline(
        logs, workers=1, only={"splitter": {"MAX_POLL_INTERVAL_MS": "10000"}}, CHUNK_FRAMES="30"
    ):
        job = await _upload(settings, clip, key)
        job_id = job["id"]

        async def first_chunk_started() -> bool:
            return any(c["started_at"] for c in await _chunks(settings, job_id))

        await eventually(first_chunk_started, 120, "a worker to start the long upload's first chunk")
        during = await job_row(settings, job_id=str(job_id))
        assert during is not None
        assert during["split_at"] is None, "a worker got work before the pass ended"
        split = await _split_of(settings, job_id, 300)
        _cancel(job_id)
    assert split["status"] != "failed", split["error_message"]
    assert split["split_at"] is not None
    assert (split["split_at"] - split["split_started_at"]).total_seconds() > 10, (
        "the pass must outlast the consumer's poll interval for this test to show anything"
    )
    assert split["split_tries"] == 1, "the split ran once: no rebalance handed it to another planner"
    rows = await _chunks(settings, job_id)
    assert [c["chunk_index"] for c in rows] == list(range(split["chunks_total"]))
    assert sum(c["frame_count"] - (1 if c["spec"]["shares_last_frame"] else 0) for c in rows) == 3600
    assert rows[0]["spec"]["chunk_count"] is None, "announced before the count was known"
    assert rows[-1]["spec"]["chunk_count"] == split["chunks_total"]
    splitter_log = (logs / "splitter.log").read_text()
    assert splitter_log.count('"split started"') == 1
    assert "max.poll" not in splitter_log, "the consumer never overran its poll interval"


async def test_a_split_whose_splitter_dies_is_taken_over_once_and_yields_the_same_plan(
    settings: CommonSettings, tmp_path: Path
) -> None:
    clip = long_clip(tmp_path / "long.mp4", seconds=60)
    run = uuid.uuid4().hex[:8]
    logs = tmp_path / "logs"
    with running_pipeline(logs, workers=0, CHUNK_FRAMES="30", SPLIT_LEASE_S="4") as services:
        killed = await _upload(settings, clip, f"stream/{run}/killed.mp4")

        async def some_chunks() -> bool:
            return len(await _chunks(settings, killed["id"])) >= 3

        await eventually(some_chunks, 120, "the first chunks of the split")
        [splitter] = [s for s in services if s.name == "splitter"]
        splitter.process.send_signal(signal.SIGKILL)
        splitter.process.wait(10)
        mid_pass = await job_row(settings, job_id=str(killed["id"]))
        assert mid_pass is not None
        assert mid_pass["split_at"] is None, "killed in the middle of its pass"
        env = {**splitter_env(), "CHUNK_FRAMES": "30", "SPLIT_LEASE_S": "4"}
        services.append(start_service("splitter", logs, env, "-2"))
        taken_over = await _split_of(settings, killed["id"], 300)
        whole = await _upload(settings, clip, f"stream/{run}/whole.mp4")
        uninterrupted = await _split_of(settings, whole["id"], 300)
        _cancel(killed["id"])
        _cancel(whole["id"])
    assert (taken_over["split_tries"], uninterrupted["split_tries"]) == (2, 1)
    assert taken_over["chunks_total"] == uninterrupted["chunks_total"]
    planned = [(c["first_frame"], c["frame_count"]) for c in await _chunks(settings, killed["id"])]
    assert planned == [(c["first_frame"], c["frame_count"]) for c in await _chunks(settings, whole["id"])]
    cuts = json.loads(taken_over["plan"])["scene_cuts"]
    assert cuts == json.loads(uninterrupted["plan"])["scene_cuts"]
    assert {300, 600, 900, 1200, 1500} <= set(cuts), "the pattern changes every 10 s are cuts"


async def test_cancelling_a_job_stops_its_split_in_progress(settings: CommonSettings, tmp_path: Path) -> None:
    clip = long_clip(tmp_path / "long.mp4", seconds=90)
    logs = tmp_path / "logs"
    with running_pipeline(logs, workers=0, CHUNK_FRAMES="30", SPLIT_LEASE_S="3"):
        job = await _upload(settings, clip, f"stream/{uuid.uuid4().hex[:8]}/cancelled.mp4")

        async def some_chunks() -> bool:
            return len(await _chunks(settings, job["id"])) >= 1

        await eventually(some_chunks, 120, "the first chunks of the split")
        _cancel(job["id"])

        async def stopped() -> bool:
            return '"split stopped"' in (logs / "splitter.log").read_text()

        await eventually(stopped, 30, "the splitter to stop the pass")
        planned = len(await _chunks(settings, job["id"]))
        await asyncio.sleep(3)
        assert len(await _chunks(settings, job["id"])) == planned, "no chunk planned after the stop"
    final = await wait_for_job(settings, job_id=str(job["id"]), timeout_s=10)
    assert final["status"] == "cancelled"
    assert final["split_at"] is None
    rows = await _chunks(settings, job["id"])
    own = sum(c["frame_count"] - (1 if c["spec"]["shares_last_frame"] else 0) for c in rows)
    assert own < 90 * 30, "the pass stopped before the end of the source"


def splitter_env() -> dict[str, str]:
    """The environment `running_pipeline` gives its services."""
    import os

    return os.environ | {"METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"}
