"""Workers join and leave mid-job (a scaler at work): the job neither stalls nor loses or doubles a chunk."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.clips import panning_clip
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.faults import FAULT_SETTINGS, assert_one_good_output, claimed_by
from tests.support.jobs import connect, wait_for_job
from tests.support.pipeline import running_pipeline, start_service

pytestmark = WHOLE_PIPELINE


async def _chunk_row(settings: CommonSettings, key: str, index: int) -> dict[str, object]:
    connection = await connect(settings)
    try:
        row = await connection.fetchrow(
            "select c.* from chunks c join jobs j on j.id = c.job_id "
            "where j.source_key = $1 and c.chunk_index = $2",
            key, index,
        )  # fmt: skip
    finally:
        await connection.close()
    assert row is not None
    return dict(row)


async def _first_claim(
    settings: CommonSettings, key: str, worker_prefixes: tuple[str, ...], timeout_s: float
) -> tuple[str, int]:
    """Wait until one of the workers works on a chunk of the job; returns its prefix and the chunk."""
    waits = {asyncio.create_task(claimed_by(settings, key, p, timeout_s)): p for p in worker_prefixes}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    first = done.pop()
    return waits[first], first.result()  # raises when none took a chunk in time


async def test_workers_that_join_and_leave_mid_job_hand_work_over_without_stalling(
    settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    key = f"faults/{unique}/scaling.mp4"
    logdir = tmp_path / "logs"
    # nine chunks: enough that a joining worker finds some left whatever this CPU's speed and
    # whichever partitions the group gives it
    clip = panning_clip(tmp_path / "in.mp4", width=320, height=180, seconds=6)
    # 20-frame chunks (4–8 s of CPU work each, by CPU): the job still runs when the new workers have
    # joined, and the leaving worker, stopped as its chunk starts, hands it back rather than finish it
    settings_under_test = FAULT_SETTINGS | {"CHUNK_FRAMES": "20"}
    with running_pipeline(logdir, workers=1, **settings_under_test) as services:
        make_client(settings).fput_object(
            settings.incoming_bucket, key, str(clip.path), metadata={"multiplier": "2", "engine": "rife"}
        )
        await claimed_by(settings, key, "worker-1", timeout_s=90)

        # scale up: two workers join the group while the job runs
        env = os.environ | {"METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"} | settings_under_test
        joined = [
            start_service(
                "gpu_interp",
                logdir,
                # The leaving worker gets a grace period shorter than a chunk, so it must hand its
                # chunk back: with a longer one it rightly finishes the chunk instead.
                env
                | {
                    "WORKER_ID": f"worker-{i}-{uuid.uuid4().hex[:6]}",
                    "SHUTDOWN_GRACE_S": "10",
                    "BATCH_SIZE": "1",
                },
                f"-{i}",
            )
            for i in (2, 3)
        ]
        services.extend(joined)
        # the first joined worker to take a chunk is the one told to leave
        leaving_prefix, index = await _first_claim(settings, key, ("worker-2", "worker-3"), timeout_s=90)
        leaving = joined[0] if leaving_prefix == "worker-2" else joined[1]

        # scale down: the new worker is told to stop in the middle of its chunk
        stopped_at = time.monotonic()
        leaving.process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(leaving.process.wait, 30)
        assert exit_code == 0
        assert time.monotonic() - stopped_at < 15, "it left within its grace period"
        log = leaving.log.read_text()
        assert '"chunk handed back"' in log
        assert '"work handed back"' in log, "its chunk.ready record was left uncommitted"

        job = await wait_for_job(settings, key=key, timeout_s=240)
        await assert_one_good_output(settings, job, 6 * 30, tmp_path)

    handed = await _chunk_row(settings, key, index)
    assert handed["status"] == "done"
    assert not str(handed["worker"]).startswith(leaving_prefix), "another worker finished the chunk"
    # taken over from the hand-back, not after its lease ran out (which would count a lost try)
    assert handed["attempts"] == 1, "the released chunk was taken without waiting out its lease"
