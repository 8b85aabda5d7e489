"""What a finished job delivers and tells its user: the quality self-check, the timing report, and
the output video the user chose (codec, rate control, preset, HDR metadata kept).

The pipeline here runs with the default chunk length (48 frames), long enough for the self-check to
re-create a frame per chunk inside its 4 % budget, and one worker.
"""

from __future__ import annotations

import json
import subprocess
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
from tests.support.clips import frames_rgb, panning_clip, probe, psnr, run, textured, video_stream
from tests.support.e2e import WHOLE_PIPELINE, drop_source
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess, WebhookReceiver, running_pipeline
from tests.support.waiting import eventually

pytestmark = WHOLE_PIPELINE
FLOOR_DB = 22.0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    """The five services with 48-frame chunks, one worker and a 22 dB quality floor."""
    logs = tmp_path_factory.mktemp("service-logs")
    with running_pipeline(logs, workers=1, CHUNK_FRAMES="48", QUALITY_PSNR_FLOOR=str(FLOOR_DB)) as services:
        yield services
    print(f"service logs: {logs}")


async def _chunks(settings: CommonSettings, job_id: Any) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        rows = await connection.fetch("select * from chunks where job_id = $1 order by chunk_index", job_id)
    finally:
        await connection.close()
    return [dict(r) for r in rows]


async def _webhook(webhooks: WebhookReceiver, settings: CommonSettings, job_id: str) -> dict[str, Any]:
    await eventually(lambda: webhooks.for_job(job_id), 30, "the webhook", fail=False)
    [delivery] = webhooks.for_job(job_id)
    payload: dict[str, Any] = Webhook(settings.webhook_secret.get_secret_value()).verify(
        delivery["body"], delivery["headers"]
    )
    return payload


def _first_frame_side_data(path: Path) -> dict[str, dict[str, Any]]:
    """The first video frame's side data (HDR10 metadata lives there, in SEI), by type."""
    frame = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1", "-show_frames",
         "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {d["side_data_type"]: d for d in json.loads(frame.stdout)["frames"][0]["side_data_list"]}


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
    drop_source(settings, clip.path, key, multiplier="2", engine="flow", **{"webhook-url": webhooks.url})
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
    drop_source(settings, clip.path, key, multiplier="2", engine="flow", **{"webhook-url": webhooks.url})
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
    drop_source(settings, clip.path, key, multiplier="2", engine="flow", **{"webhook-url": webhooks.url})
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


async def test_an_hdr_10_bit_source_becomes_h265_keeping_depth_colour_and_hdr10_metadata(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    source = workdir / "hdr.mp4"
    x265 = (
        "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:"
        "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):max-cll=1000,400"
    )
    run("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=1", "-pix_fmt", "yuv420p10le",
        "-c:v", "libx265", "-x265-params", x265, "-color_primaries", "bt2020", "-color_trc", "smpte2084",
        "-colorspace", "bt2020nc", str(source))  # fmt: skip
    key = f"e2e/{unique}/hdr.mp4"
    drop_source(settings, source, key, multiplier="2", engine="flow", codec="h265", crf="24", preset="fast")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    out = workdir / "out.mp4"
    make_client(settings).fget_object(job["output_bucket"], job["output_key"], str(out))

    stream = video_stream(probe(out))
    assert (stream["codec_name"], stream["codec_tag_string"], stream["pix_fmt"]) == (
        "hevc",
        "hvc1",
        "yuv420p10le",
    )
    assert int(stream["nb_read_frames"]) == 50
    assert (stream["color_primaries"], stream["color_transfer"], stream["color_space"]) == (
        "bt2020",
        "smpte2084",
        "bt2020nc",
    )
    side = _first_frame_side_data(out)
    mastering = side["Mastering display metadata"]
    assert (mastering["red_x"], mastering["white_point_y"], mastering["max_luminance"]) == (
        "34000/50000",
        "16450/50000",
        "10000000/10000",
    )
    assert (
        side["Content light level metadata"]["max_content"],
        side["Content light level metadata"]["max_average"],
    ) == (1000, 400)
    status = await _status(settings, str(job["id"]))
    assert status["output_options"] == {
        "codec": "h265", "encoder": "libx265", "crf": 24, "bitrate": None, "preset": "fast", "dedupe": False,
        "container": "mp4", "container_reason": "MP4 carries every audio and subtitle stream",
        "container_losses": [],
    }  # fmt: skip


async def test_a_codec_this_ffmpeg_cannot_encode_is_refused_with_a_code(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    clip = panning_clip(workdir / "clip.mp4", width=160, height=96, seconds=0.5, audio=False)
    async with httpx.AsyncClient(base_url=settings.api_url, timeout=60) as client:
        with clip.path.open("rb") as file:
            response = await client.post(
                "/api/upload", files={"file": ("clip.mp4", file, "video/mp4")}, data={"codec": "vp9"}
            )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "E_OUTPUT_CODEC_UNSUPPORTED"
    key = f"e2e/{unique}/clip.mp4"
    drop_source(settings, clip.path, key, engine="flow", codec="prores")
    job = await wait_for_job(settings, key=key, timeout_s=60)
    assert (job["status"], job["error_code"]) == ("failed", "E_OUTPUT_CODEC_UNSUPPORTED")
    assert "h264, h265, av1" in job["error_message"]


async def test_duplicated_frames_are_skipped_so_the_output_follows_the_real_motion(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    # 30 fps stream whose picture moves only every other frame (4 px each time): 2 px per frame of
    # real motion, so at ×2 every output frame should sit 1 px further than the one before.
    clip = panning_clip(workdir / "held.mp4", seconds=2, shift_px=4, hold=2, audio=False)
    strip = textured(320 + clip.frames * 4, 180, 1)
    results = {}
    for dedupe in ("true", "false"):
        key = f"e2e/{unique}/held-{dedupe}.mp4"
        drop_source(settings, clip.path, key, multiplier="2", engine="flow", dedupe=dedupe)
        job = await wait_for_job(settings, key=key)
        assert job["status"] in ("completed", "completed_with_warnings"), job["error_message"]
        out = workdir / f"out-{dedupe}.mp4"
        make_client(settings).fget_object(job["output_bucket"], job["output_key"], str(out))
        frames = frames_rgb(out)
        assert len(frames) == 2 * clip.frames, "skipping duplicates keeps every output slot"
        # up to the last distinct source frame (58, output 116) the truth is the texture k px along
        span = range(2, 112)
        results[dedupe] = {
            "truth_psnr": sum(psnr(frames[k], strip[:, k : k + 320]) for k in span) / len(span),
            "repeats": sum(psnr(frames[k], frames[k - 1]) > 45 for k in span),
            "skipped": job["plan"],
        }
    print(f"duplicates: {results}")
    assert '"duplicates_skipped": 30' in results["true"]["skipped"]
    assert results["true"]["repeats"] == 0, "no output frame repeats the one before"
    assert results["false"]["repeats"] >= 40, "without the option the duplicates stay (and multiply)"
    assert results["true"]["truth_psnr"] > results["false"]["truth_psnr"] + 3
    assert results["true"]["truth_psnr"] > 27
