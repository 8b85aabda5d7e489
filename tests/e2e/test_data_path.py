"""The data path on the real stack: chunks planned as frame ranges of the pinned source, encoded where
they are interpolated, concatenated by stream copy, and cleaned up when the job ends (issue 12).

The services run as processes against the real Kafka, MinIO, PostgreSQL and FFmpeg: one pipeline with
work-based chunk sizing for the long tiny clip, then one with ten-frame chunks, two workers and two
muxer replicas for everything else.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import numpy.typing as npt
import pytest

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.clips import frames_rgb, panning_clip, probe, psnr, video_stream
from tests.support.e2e import WHOLE_PIPELINE, download_output, drop_source
from tests.support.jobs import job_row, wait_for_job
from tests.support.pipeline import ServiceProcess, running_pipeline, start_service
from tests.support.waiting import eventually

pytestmark = WHOLE_PIPELINE

CHUNK_FRAMES = 10  # each chunk owns 9 frames and shares the 10th with the next one of its scene


def _work_objects(settings: CommonSettings, job_id: object) -> list[str]:
    listed = make_client(settings).list_objects(settings.work_bucket, prefix=f"{job_id}/", recursive=True)
    return [str(o.object_name) for o in listed]


def _outputs(settings: CommonSettings, job_id: object) -> list[str]:
    listed = make_client(settings).list_objects(settings.output_bucket, prefix=f"{job_id}/", recursive=True)
    return [str(o.object_name) for o in listed]


async def _chunk_starts(settings: CommonSettings, job_id: object) -> list[int]:
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "select * from chunks where job_id = $1::uuid order by chunk_index", str(job_id)
        )
    finally:
        await connection.close()
    return [int(r["first_frame"]) for r in rows]


async def _job_once_in(settings: CommonSettings, key: str, status: str, timeout_s: float = 120) -> dict:  # type: ignore[type-arg]
    """The job of `key` as soon as it reaches `status` (it must not end first)."""
    deadline = time.monotonic() + timeout_s
    row = None
    while time.monotonic() < deadline:
        row = await job_row(settings, key=key)
        if row and row["status"] == status:
            return row
        assert not row or row["status"] not in ("completed", "failed"), f"ended before {status}: {row}"
        await asyncio.sleep(0.1)
    raise AssertionError(f"job of {key} never reached {status}: {row}")


async def _eventually_empty(settings: CommonSettings, job_id: object, timeout_s: float = 30) -> list[str]:
    """The job's work objects, polled until none are left (a chunk in flight may upload a moment late)."""
    return await eventually(
        lambda: _work_objects(settings, job_id),
        timeout_s,
        "no work objects",
        until=lambda left: not left,
        interval_s=1,
        fail=False,
    )


def _result(job: dict[str, Any]) -> dict[str, Any]:
    """The job's stored result (a JSON column)."""
    result = job["result"]
    return dict(json.loads(result) if isinstance(result, str) else result)


def _blend(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return ((a.astype(np.float32) + b) / 2).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# Work-based chunk sizing (no CHUNK_FRAMES): its own pipeline, started and stopped inside the test, so it
# runs before the module's ten-frame pipeline below is started.


async def test_a_long_tiny_clip_becomes_a_handful_of_chunks(
    tmp_path_factory: pytest.TempPathFactory, settings: CommonSettings, unique: str
) -> None:
    workdir = tmp_path_factory.mktemp("tiny")
    clip = panning_clip(workdir / "tiny.mp4", width=16, height=16, seconds=180, shift_px=1, audio=False)
    key = f"e2e/{unique}/tiny.mp4"
    assert "CHUNK_FRAMES" not in os.environ, "chunks are sized by work here"
    with running_pipeline(tmp_path_factory.mktemp("work-sized-logs")):
        drop_source(settings, clip.path, key, multiplier="2", engine="flow")
        job = await wait_for_job(settings, key=key, timeout_s=400)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    assert 1 <= job["chunks_total"] <= 3, f"{clip.frames} frames of 16×16 became {job['chunks_total']} chunks"
    result = video_stream(probe(download_output(settings, job, workdir / "out.mp4")))
    assert int(result["nb_read_frames"]) == 2 * clip.frames


# ---------------------------------------------------------------------------------------------------
# Ten-frame chunks, two workers, two muxer replicas.


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    """The pipeline with ten-frame chunks and a second muxer replica in the same consumer group."""
    logs = tmp_path_factory.mktemp("data-path-logs")
    overrides = {
        "CHUNK_FRAMES": str(CHUNK_FRAMES),
        "SWEEPER_INTERVAL_S": "3",
        "SWEEPER_MIN_AGE_S": "5",
        "CANCEL_POLL_S": "0.3",
    }
    with running_pipeline(logs, **overrides) as services:
        env = os.environ | {"METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"} | overrides
        second = start_service("muxer", logs, env, "-2")
        try:
            deadline = time.monotonic() + 90
            while not second.ready():
                assert second.alive(), second.log.read_text()[-2000:]
                assert time.monotonic() < deadline, "second muxer not ready"
                time.sleep(0.3)
            yield [*services, second]
        finally:
            second.process.terminate()
            second.process.wait(20)
    print(f"service logs: {logs}")


async def test_a_scene_cut_exactly_on_a_chunk_boundary_is_kept_and_never_blended(
    replicated: list[ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    # ten-frame chunks own frames [0, 9) and [9, 18) of the first scene: the cut at 18 is the boundary
    cut = 2 * (CHUNK_FRAMES - 1)
    clip = panning_clip(tmp_path / "cut.mp4", width=160, height=96, seconds=1.5, cut_at=cut, audio=False)
    key = f"e2e/{unique}/cut.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    assert _result(job)["scene_starts"] == [cut], "the job reports the cut"
    starts = await _chunk_starts(settings, job["id"])
    assert cut in starts, f"a chunk starts at the cut: {starts}"

    source = frames_rgb(clip.path)
    result = frames_rgb(download_output(settings, job, tmp_path / "out.mp4"))
    assert len(result) == 2 * clip.frames, "output frame count is exact"
    last, first = source[cut - 1], source[cut]
    assert psnr(result[2 * cut - 1], last) > 35, "the slot after the scene's last frame repeats it"
    assert psnr(result[2 * cut], first) > 35, "the next scene starts on its own first frame"
    mixed = _blend(last, first)
    for j in range(2 * cut - 6, 2 * cut + 6):
        side = source[max(0, j // 2 - 1) : cut] if j < 2 * cut else source[cut : j // 2 + 2]
        nearest = max(psnr(result[j], s) for s in side)
        other = source[cut] if j < 2 * cut else source[cut - 1]
        assert nearest > psnr(result[j], mixed), f"output frame {j} looks like a blend of both scenes"
        assert nearest > psnr(result[j], other) + 3, f"output frame {j} shows the other scene"


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_seams_between_encoded_chunks_keep_every_source_frame_once(
    replicated: list[ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str, codec: str
) -> None:
    clip = panning_clip(tmp_path / "pan.mp4", width=160, height=96, seconds=1.5, shift_px=2, audio=False)
    key = f"e2e/{unique}/pan-{codec}.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow", codec=codec, crf="16")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    assert job["chunks_total"] >= 4, "the clip spans several encoded chunks"
    out = download_output(settings, job, tmp_path / "out.mp4")
    assert video_stream(probe(out))["codec_name"] == {"h264": "h264", "h265": "hevc"}[codec]
    source = frames_rgb(clip.path)
    result = frames_rgb(out)
    assert len(result) == 2 * len(source), "frame count exact"
    for k in range(len(source)):
        here = psnr(result[2 * k], source[k])
        assert here >= 35, f"output frame {2 * k} decodes to source frame {k} within the encoder's error"
        for neighbour in (k - 1, k + 1):
            if 0 <= neighbour < len(source):
                assert here > psnr(result[2 * k], source[neighbour]), (
                    f"output frame {2 * k} is source frame {k}, not {neighbour}: a seam dropped or repeated one"
                )
    for k in range(len(source) - 1):
        middle = result[2 * k + 1]
        assert psnr(middle, _blend(source[k], source[k + 1])) > min(
            psnr(middle, source[k]), psnr(middle, source[k + 1])
        ), f"output frame {2 * k + 1} lies between source frames {k} and {k + 1}"


async def test_a_completed_jobs_work_objects_are_gone_and_its_output_is_kept(
    replicated: list[ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    clip = panning_clip(tmp_path / "done.mp4", width=160, height=96, seconds=1, audio=False)
    key = f"e2e/{unique}/done.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    assert job["chunks_total"] >= 3
    assert await _eventually_empty(settings, job["id"]) == [], "no work object is left"
    assert _outputs(settings, job["id"]) == [job["output_key"]], "the output, once"


def _slow_clip(path: Path) -> Path:
    """Enough ten-frame chunks at 320×180 that two workers are still busy when the test acts."""
    return panning_clip(path, width=320, height=180, seconds=8, audio=False).path


async def test_a_source_deleted_mid_job_fails_it_with_source_gone_and_cleans_up(
    replicated: list[ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    key = f"e2e/{unique}/deleted.mp4"
    drop_source(settings, _slow_clip(tmp_path / "slow.mp4"), key, multiplier="2", engine="flow")
    job = await _job_once_in(settings, key, "interpolating")
    make_client(settings).remove_object(settings.incoming_bucket, key)

    job = await wait_for_job(settings, job_id=str(job["id"]))
    assert (job["status"], job["error_code"]) == ("failed", "E_SOURCE_GONE"), job["error_message"]
    assert await _eventually_empty(settings, job["id"]) == [], "a failed job keeps no work objects"
    assert _outputs(settings, job["id"]) == [], "and has no output"

    # the pipeline keeps going
    clip = panning_clip(tmp_path / "next.mp4", width=160, height=96, seconds=0.5, audio=False)
    after = f"e2e/{unique}/after-delete.mp4"
    drop_source(settings, clip.path, after, multiplier="2", engine="flow")
    following = await wait_for_job(settings, key=after)
    assert following["status"] == "completed", (following["error_code"], following["error_message"])
    assert all(service.alive() for service in replicated), "no service crashed"


async def test_a_source_overwritten_mid_job_is_never_mixed_with_the_new_file(
    replicated: list[ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    original = _slow_clip(tmp_path / "original.mp4")
    key = f"e2e/{unique}/overwritten.mp4"
    drop_source(settings, original, key, multiplier="2", engine="flow")
    job = await _job_once_in(settings, key, "interpolating")
    job_id = str(job["id"])
    replacement = panning_clip(tmp_path / "new.mp4", width=160, height=96, seconds=0.5, audio=False)
    drop_source(settings, replacement.path, key, multiplier="2", engine="flow")

    job = await wait_for_job(settings, job_id=job_id)
    if job["status"] == "failed":
        assert job["error_code"] == "E_SOURCE_CHANGED", (job["error_code"], job["error_message"])
        assert _outputs(settings, job_id) == []
    else:
        assert job["status"] == "completed", job
        source = frames_rgb(original)
        result = frames_rgb(download_output(settings, job, tmp_path / "out.mp4"))
        assert len(result) == 2 * len(source), "processed entirely from the probed version"
        assert min(psnr(result[2 * k], source[k]) for k in range(len(source))) > 35
    assert await _eventually_empty(settings, job_id) == []

    # the new upload is a job of its own, and it completes
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:

        async def job_ids() -> list[str]:
            rows = await connection.fetch("select id from jobs where source_key = $1", key)
            return [str(r["id"]) for r in rows]

        ids = await eventually(
            job_ids, 60, "a second job", until=lambda ids: len(ids) >= 2, interval_s=0.5, fail=False
        )
    finally:
        await connection.close()
    [new_id] = [i for i in ids if i != job_id]
    new = await wait_for_job(settings, job_id=new_id)
    assert new["status"] == "completed", (new["error_code"], new["error_message"])
    assert int(
        video_stream(probe(download_output(settings, new, tmp_path / "new-out.mp4")))["nb_read_frames"]
    ) == (2 * replacement.frames)


async def test_two_muxer_replicas_assemble_a_job_once(
    replicated: list[ServiceProcess],
    webhooks: Any,
    settings: CommonSettings,
    tmp_path: Path,
    unique: str,
) -> None:
    muxers = [s for s in replicated if s.name.startswith("muxer")]
    assert len(muxers) == 2
    clip = panning_clip(tmp_path / "twice.mp4", width=160, height=96, seconds=2, audio=False)
    key = f"e2e/{unique}/twice.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow", **{"webhook-url": webhooks.url})
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    assert job["chunks_total"] >= 6
    job_id = str(job["id"])
    await eventually(lambda: webhooks.for_job(job_id), 30, "the webhook", fail=False)
    await asyncio.sleep(3)  # a second assembly, were there one, would announce itself by now

    completions = [
        line
        for muxer in muxers
        for line in muxer.log.read_text(errors="replace").splitlines()
        if job_id in line and json.loads(line).get("event") == "job completed"
    ]
    assert len(completions) == 1, completions
    deliveries = [json.loads(d["body"])["type"] for d in webhooks.for_job(job_id)]
    assert deliveries == ["job.completed"]
    assert _outputs(settings, job_id) == [job["output_key"]]


async def test_the_status_api_reports_the_time_of_each_stage(
    replicated: list[ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    clip = panning_clip(tmp_path / "timed.mp4", width=160, height=96, seconds=1, audio=False)
    key = f"e2e/{unique}/timed.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    async with httpx.AsyncClient(base_url=settings.api_url, timeout=30) as client:
        response = await client.get(f"/api/status/{job['id']}")
    assert response.status_code == 200, response.text
    timings = response.json()["timings"]
    for stage in ("split_s", "interpolate_s", "mux_s"):
        assert isinstance(timings[stage], int | float), (stage, timings)
        assert timings[stage] >= 0, (stage, timings)
    assert timings["split_s"] + timings["interpolate_s"] + timings["mux_s"] > 0
    elapsed = (job["completed_at"] - job["created_at"]).total_seconds()
    assert timings["mux_s"] <= elapsed + 1


async def _leased_chunks(settings: CommonSettings, job_id: object) -> int:
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        return int(
            await connection.fetchval(
                "select count(*) from chunks where job_id = $1 and status = 'claimed' and lease_expires_at > now()",
                job_id,
            )
        )
    finally:
        await connection.close()


async def test_a_job_cancelled_mid_interpolation_stops_its_workers_and_keeps_no_objects(
    replicated: list[ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    key = f"e2e/{unique}/cancelled.mp4"
    clip = panning_clip(tmp_path / "big.mp4", width=640, height=360, seconds=4, audio=False).path
    drop_source(settings, clip, key, multiplier="8", engine="flow")
    job = await _job_once_in(settings, key, "interpolating")
    # a worker is inside a chunk
    await eventually(lambda: _leased_chunks(settings, job["id"]), 60, "a chunk in progress")

    async with httpx.AsyncClient(base_url=settings.api_url, timeout=30) as client:
        response = await client.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    # the workers notice within a poll and a batch: every lease stops being renewed, nothing new starts
    leased = await eventually(
        lambda: _leased_chunks(settings, job["id"]),
        30,
        "no leased chunk",
        until=lambda n: n == 0,
        interval_s=0.5,
        fail=False,
    )
    assert leased == 0, "a worker kept working on a cancelled job"
    assert await _eventually_empty(settings, job["id"]) == [], "a cancelled job keeps no work objects"
    assert _outputs(settings, job["id"]) == [], "and has no output"
    final = await job_row(settings, job_id=str(job["id"]))
    assert final is not None
    assert final["status"] == "cancelled"
    assert final["chunks_done"] < final["chunks_total"], "the job stopped before all its chunks were done"
    abandoned = [
        line
        for service in replicated
        if service.name.startswith("gpu_interp")
        for line in service.log.read_text().splitlines()
        if "chunk abandoned" in line and str(job["id"]) in line
    ]
    assert abandoned, "the chunk in hand was dropped mid-way, not finished"

    small = panning_clip(tmp_path / "next.mp4", width=160, height=96, seconds=0.5, audio=False)
    after = f"e2e/{unique}/after-cancel.mp4"
    drop_source(settings, small.path, after, multiplier="2", engine="flow")
    following = await wait_for_job(settings, key=after)
    assert following["status"] == "completed", (following["error_code"], following["error_message"])
