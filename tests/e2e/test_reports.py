"""What a finished job tells its user about itself: the quality self-check and the timing report.

The pipeline here runs with the default chunk length (48 frames), long enough for the self-check to
re-create a frame per chunk inside its 4 % budget, and one worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.e2e.conftest import wait_for_job
from tests.e2e.pipeline import ServiceProcess, WebhookReceiver, running_pipeline
from tests.fixtures.media import panning_clip

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.minio,
    pytest.mark.postgres,
    pytest.mark.ffmpeg,
    pytest.mark.slow,
]
FLOOR_DB = 22.0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    """The five services with 48-frame chunks, one worker and a 22 dB quality floor."""
    logs = tmp_path_factory.mktemp("service-logs")
    with running_pipeline(logs, workers=1, CHUNK_FRAMES="48", QUALITY_PSNR_FLOOR=str(FLOOR_DB)) as services:
        yield services
    print(f"service logs: {logs}")


def _drop(settings: CommonSettings, path: Path, key: str, **metadata: str) -> None:
    make_client(settings).fput_object(settings.incoming_bucket, key, str(path), metadata=metadata)


async def _chunks(settings: CommonSettings, job_id: Any) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        rows = await connection.fetch("select * from chunks where job_id = $1 order by chunk_index", job_id)
    finally:
        await connection.close()
    return [dict(r) for r in rows]


async def _webhook(webhooks: WebhookReceiver, settings: CommonSettings, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while not webhooks.for_job(job_id) and time.monotonic() < deadline:  # noqa: ASYNC110 - polled with a deadline
        await asyncio.sleep(0.2)
    [delivery] = webhooks.for_job(job_id)
    payload: dict[str, Any] = Webhook(settings.webhook_secret.get_secret_value()).verify(
        delivery["body"], delivery["headers"]
    )
    return payload


async def _status(settings: CommonSettings, job_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=settings.api_url, timeout=30) as client:
        response = await client.get(f"/api/status/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_smooth_clip_is_scored_per_chunk_and_completes_without_warnings(
    pipeline: list[ServiceProcess],
    webhooks: WebhookReceiver,
    settings: CommonSettings,
    workdir: Path,
    unique: str,
) -> None:
    clip = panning_clip(workdir / "pan.mp4", seconds=2, cut_at=31)
    key = f"e2e/{unique}/pan.mp4"
    _drop(settings, clip.path, key, multiplier="2", engine="flow", **{"webhook-url": webhooks.url})
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])

    chunks = await _chunks(settings, job["id"])
    assert len(chunks) == 2, "one chunk per scene"
    for chunk in chunks:
        assert chunk["quality_samples"] == 1
        assert chunk["quality_psnr_db"] > 30, "smooth panning is easy to re-create"
        assert 0.9 < chunk["quality_ssim"] <= 1
        assert 0 < chunk["quality_seconds"] < chunk["interp_seconds"]
    assert job["quality_psnr_db"] == pytest.approx(sum(c["quality_psnr_db"] for c in chunks) / 2)
    worst = min(chunks, key=lambda c: c["quality_psnr_db"])
    assert job["quality_worst_chunk"] == worst["chunk_index"]
    assert job["quality_low_chunks"] == "[]"

    data = (await _webhook(webhooks, settings, str(job["id"])))["data"]
    assert data["status"] == "completed"
    assert data["quality"]["psnr_db"] == pytest.approx(job["quality_psnr_db"])
    assert data["quality"]["worst_chunk_index"] == worst["chunk_index"]
    assert data["quality"]["chunks_below_floor"] == []
    assert data["quality"]["psnr_floor_db"] == FLOOR_DB
    status = await _status(settings, str(job["id"]))
    assert status["quality"]["psnr_db"] == pytest.approx(job["quality_psnr_db"])
    assert status["quality"]["worst_chunk"]["index"] == worst["chunk_index"]


async def test_a_shaky_clip_completes_with_warnings_naming_the_chunks_below_the_floor(
    pipeline: list[ServiceProcess],
    webhooks: WebhookReceiver,
    settings: CommonSettings,
    workdir: Path,
    unique: str,
) -> None:
    clip = panning_clip(workdir / "shaky.mp4", seconds=2, jitter_px=9, audio=False)
    key = f"e2e/{unique}/shaky.mp4"
    _drop(settings, clip.path, key, multiplier="2", engine="flow", **{"webhook-url": webhooks.url})
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed_with_warnings", (job["error_code"], job["error_message"])

    chunks = await _chunks(settings, job["id"])
    low = [
        c["chunk_index"]
        for c in chunks
        if c["quality_psnr_db"] is not None and c["quality_psnr_db"] < FLOOR_DB
    ]
    assert low, "every frame of a shaking camera is off its neighbours' midpoint"
    data = (await _webhook(webhooks, settings, str(job["id"])))["data"]
    assert data["status"] == "completed_with_warnings"
    assert data["quality"]["chunks_below_floor"] == low
    status = await _status(settings, str(job["id"]))
    assert status["status"] == "completed_with_warnings"
    assert status["quality"]["chunks_below_floor"] == low
    assert status["download_url"], "the output is there all the same"


async def test_the_timing_report_gives_rates_counts_durations_audio_drift_and_scene_cuts(
    pipeline: list[ServiceProcess],
    webhooks: WebhookReceiver,
    settings: CommonSettings,
    workdir: Path,
    unique: str,
) -> None:
    clip = panning_clip(workdir / "cut.mp4", seconds=2, cut_at=31, rate=Fraction(30000, 1001))
    key = f"e2e/{unique}/cut.mp4"
    _drop(settings, clip.path, key, multiplier="2", engine="flow", **{"webhook-url": webhooks.url})
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])

    timing = (await _webhook(webhooks, settings, str(job["id"])))["data"]["timing"]
    frame = 1001 / 60000
    assert timing["input"] == {
        "fps": "30000/1001",
        "frame_count": clip.frames,
        "duration_s": pytest.approx(clip.frames * 1001 / 30000),
        "vfr": False,
        "vfr_converted": False,
    }
    assert timing["output"]["fps"] == "60000/1001"
    assert timing["output"]["frame_count"] == 2 * clip.frames
    assert timing["output"]["duration_s"] == pytest.approx(clip.frames * 1001 / 30000, abs=frame)
    assert timing["audio"]["duration_s"] == pytest.approx(2.0, abs=0.03)
    assert abs(timing["audio"]["drift_s"]) < frame, "audio and video end within one output frame"
    assert abs(timing["audio"]["drift_frames"]) < 1
    assert timing["scene_cuts"] == [{"frame": 31, "time_s": pytest.approx(31 * 1001 / 30000)}]

    status = await _status(settings, str(job["id"]))
    assert status["timing"] == timing, "the status API shows the same report"
