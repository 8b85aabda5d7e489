"""Every audio and subtitle track reaches the output untouched, in a container that carries it, or the
job is refused at ingest before any work.

These run the five services as processes against the real Kafka, MinIO, PostgreSQL and FFmpeg.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from infiniteflow_common.settings import CommonSettings
from tests.support.clips import (
    audio_packets,
    pcm_mov_clip,
    probe,
    rotated_dts_clip,
    stream_tags,
    styled_subtitle_clip,
    video_stream,
)
from tests.support.e2e import WHOLE_PIPELINE, download_output, drop_source
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess

pytestmark = WHOLE_PIPELINE


def _json(value: Any) -> dict[str, Any]:
    return dict(json.loads(value) if isinstance(value, str) else value or {})


async def _chunk_rows(settings: CommonSettings, job_id: object) -> int:
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        return int(await connection.fetchval("select count(*) from chunks where job_id = $1", job_id))
    finally:
        await connection.close()


def _rotation(info: dict[str, Any]) -> list[object]:
    return [d.get("rotation") for d in video_stream(info).get("side_data_list", []) if "rotation" in d]


async def test_a_rotated_mov_with_two_pcm_tracks_completes_as_mov_with_both_tracks_bit_exact(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    clip = pcm_mov_clip(workdir / "camera.mov", rotate=90)
    key = f"e2e/{unique}/camera.mov"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    assert job["output_key"].endswith("_60fps.mov"), "the key's extension says the container"
    async with httpx.AsyncClient(base_url=settings.api_url, timeout=30) as client:
        status = (await client.get(f"/api/status/{job['id']}")).json()
    assert status["output_container"] == "mov"
    result = status["result"]
    assert result["container"] == "mov"
    assert "pcm_s16le" in result["container_reason"], result["container_reason"]
    assert result["container_losses"] == []
    assert [(t["kind"], t["codec"], t["language"]) for t in result["tracks"]] == [
        ("audio", "pcm_s16le", "eng"),
        ("audio", "pcm_s24le", "fra"),
    ]

    out = download_output(settings, job, workdir / "out.mov")
    before, after = probe(clip.path), probe(out)
    assert int(video_stream(after)["nb_read_frames"]) == 2 * clip.frames
    assert video_stream(after)["r_frame_rate"] == "60/1", "MOV keeps the exact rate"
    assert _rotation(after) == _rotation(before) != [], "and the display rotation"
    for index in (0, 1):
        assert audio_packets(out, index) == audio_packets(clip.path, index), f"audio {index} bit-exact"
    assert stream_tags(after, "audio") == stream_tags(before, "audio"), "languages and flags kept"


async def test_styled_subtitles_and_titled_tracks_complete_as_matroska_untouched(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    clip = styled_subtitle_clip(workdir / "episode.mkv")
    key = f"e2e/{unique}/episode.mkv"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    assert job["output_key"].endswith(".mkv")
    assert _json(job["result"])["container"] == "mkv"

    out = download_output(settings, job, workdir / "out.mkv")
    before, after = probe(clip.path), probe(out)
    assert int(video_stream(after)["nb_read_frames"]) == 2 * clip.frames
    assert stream_tags(after, "subtitle") == stream_tags(before, "subtitle"), "ASS, languages, title, flags"
    assert stream_tags(after, "audio") == stream_tags(before, "audio"), "the audio's title"
    assert audio_packets(out, 0) == audio_packets(clip.path, 0)


async def test_a_stream_no_container_carries_is_refused_at_ingest_before_any_work(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    clip = rotated_dts_clip(workdir / "rotated.mov")
    key = f"e2e/{unique}/rotated.mov"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key, timeout_s=60)
    assert (job["status"], job["error_code"]) == ("failed", "E_STREAM_UNSUPPORTED"), job["error_message"]
    assert "audio stream #1 (dts)" in job["error_message"]
    assert job["split_at"] is None, "never planned"
    assert job["chunks_total"] is None
    assert await _chunk_rows(settings, job["id"]) == 0, "no chunk was ever handed to a worker"
    assert all(service.alive() for service in pipeline)
