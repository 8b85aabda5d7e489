"""A user drops a video (or uploads it) and gets a higher-frame-rate copy and a signed webhook.

These run the five services as processes against the real Kafka, MinIO, PostgreSQL and FFmpeg.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest
from standardwebhooks import Webhook

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.clips import decoded_audio_md5, frames_rgb, panning_clip, probe, psnr, video_stream
from tests.support.e2e import WHOLE_PIPELINE, download_output, drop_source
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess, WebhookReceiver
from tests.support.waiting import eventually

pytestmark = WHOLE_PIPELINE


def _rate(stream: dict) -> Fraction:  # type: ignore[type-arg]
    return Fraction(stream["r_frame_rate"])


async def test_a_bucket_drop_doubles_the_frame_rate_keeps_audio_and_never_blends_a_cut(
    pipeline: list[ServiceProcess],
    webhooks: WebhookReceiver,
    settings: CommonSettings,
    workdir: Path,
    unique: str,
) -> None:
    clip = panning_clip(workdir / "in.mp4", seconds=2, cut_at=31)
    key = f"e2e/{unique}/my clip+ü %.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow", **{"webhook-url": webhooks.url})

    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    assert job["progress"] == 100
    out = download_output(settings, job, workdir / "out.mp4")
    source, result = video_stream(probe(clip.path)), video_stream(probe(out))
    assert _rate(result) == 2 * _rate(source)
    assert int(result["nb_read_frames"]) == 2 * clip.frames
    assert (result["width"], result["height"], result["pix_fmt"]) == (
        source["width"],
        source["height"],
        source["pix_fmt"],
    )
    assert decoded_audio_md5(out) == decoded_audio_md5(clip.path), "audio must be copied bit-exact"

    frames = frames_rgb(out)
    cut = clip.scene_starts[0]
    last_of_scene, slot_after = frames[2 * (cut - 1)], frames[2 * (cut - 1) + 1]
    assert psnr(slot_after, last_of_scene) > 40, "the slot after a scene's last frame repeats it"
    assert psnr(slot_after, frames[2 * cut]) < 25, "and shows nothing of the next scene"
    inside = [psnr(frames[2 * i + 1], frames[2 * i]) for i in range(3, cut - 2)]
    assert max(inside) < 40, "inside a scene the in-between frames are new, not repeats"

    [delivery] = webhooks.for_job(str(job["id"]))
    secret = settings.webhook_secret.get_secret_value()
    payload = Webhook(secret).verify(delivery["body"], delivery["headers"])
    assert payload["type"] == "job.completed"
    assert payload["data"]["source"]["key"] == key


async def test_seams_between_chunks_have_no_missing_duplicated_or_jumping_frame(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    clip = panning_clip(workdir / "pan.mp4", seconds=1.5, shift_px=2, audio=False)
    key = f"e2e/{unique}/pan.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", job["error_message"]
    source = frames_rgb(clip.path)
    result = frames_rgb(download_output(settings, job, workdir / "out.mp4"))
    assert len(result) == 2 * len(source)
    for i in range(len(source)):
        assert psnr(result[2 * i], source[i]) > 35, f"output frame {2 * i} is source frame {i}"
    # every in-between frame sits between its neighbours: closer to their average than either is
    for i in range(len(source) - 1):
        middle = result[2 * i + 1]
        average = ((source[i].astype(np.float32) + source[i + 1]) / 2).astype(np.uint8)
        assert psnr(middle, average) > min(psnr(middle, source[i]), psnr(middle, source[i + 1])), (
            f"slot {2 * i + 1}"
        )


async def test_an_upload_through_the_api_quadruples_the_frame_rate(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path
) -> None:
    clip = panning_clip(workdir / "up.mp4", width=160, height=96, seconds=1)
    async with httpx.AsyncClient(base_url=settings.api_url, timeout=60) as client:
        with clip.path.open("rb") as file:
            response = await client.post(
                "/api/upload",
                files={"file": ("holiday.mp4", file, "video/mp4")},
                data={"multiplier": "4", "engine": "flow"},
            )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        early = await client.get(f"/api/download/{job_id}")
        job = await wait_for_job(settings, job_id=job_id)
        status = (await client.get(f"/api/status/{job_id}")).json()
        download = await client.get(f"/api/download/{job_id}")
    assert early.status_code in (307, 409)
    assert job["status"] == "completed", job["error_message"]
    assert status["status"] == "completed"
    assert status["progress"] == 100
    assert download.status_code == 307
    result = video_stream(probe(download_output(settings, job, workdir / "out.mp4")))
    assert _rate(result) == 4 * clip.rate
    assert int(result["nb_read_frames"]) == 4 * clip.frames


async def test_a_target_fps_that_is_no_multiple_is_exact(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    clip = panning_clip(workdir / "film.mp4", width=160, height=96, rate=Fraction(24000, 1001), seconds=1)
    key = f"e2e/{unique}/film.mp4"
    drop_source(settings, clip.path, key, **{"target-fps": "60", "engine": "flow"})
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", job["error_message"]
    result = video_stream(probe(download_output(settings, job, workdir / "out.mp4")))
    assert _rate(result) == 60
    duration_in = Fraction(clip.frames) / clip.rate
    assert abs(int(result["nb_read_frames"]) / Fraction(60) - duration_in) < Fraction(1, 60)


@pytest.mark.parametrize(("pix_fmt", "size"), [("yuv420p10le", (160, 96)), ("yuv444p", (161, 97))])
async def test_bit_depth_and_odd_sizes_are_kept(
    pipeline: list[ServiceProcess],
    settings: CommonSettings,
    workdir: Path,
    unique: str,
    pix_fmt: str,
    size: tuple[int, int],
) -> None:
    clip = panning_clip(
        workdir / "deep.mp4", width=size[0], height=size[1], seconds=0.5, pix_fmt=pix_fmt, audio=False
    )
    key = f"e2e/{unique}/deep.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", job["error_message"]
    result = video_stream(probe(download_output(settings, job, workdir / "out.mp4")))
    assert (result["width"], result["height"], result["pix_fmt"]) == (size[0], size[1], pix_fmt)


async def test_two_workers_share_the_chunks_of_one_job(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    import asyncpg

    clip = panning_clip(workdir / "long.mp4", width=160, height=96, seconds=4, audio=False)
    key = f"e2e/{unique}/long.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", job["error_message"]
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        workers = await connection.fetch("select distinct worker from chunks where job_id = $1", job["id"])
    finally:
        await connection.close()
    assert job["chunks_total"] >= 8
    assert len(workers) == 2, "both gpu_interp instances took chunks of the job"


async def test_a_duplicate_minio_event_gives_one_job(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    import asyncpg
    from confluent_kafka import Consumer, Producer, TopicPartition

    from infiniteflow_common.minio_events import ObjectCreated, parse_notification

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"dup-{unique}"})
    topic = "minio.events"
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign(
        [
            TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p))[1])
            for p in partitions
        ]
    )
    clip = panning_clip(workdir / "dup.mp4", width=160, height=96, seconds=0.5, audio=False)
    key = f"e2e/{unique}/dup.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow")
    original = None
    while original is None:
        message = consumer.poll(1.0)
        if message is not None and not message.error():
            records = parse_notification(message.value())
            if any(isinstance(r, ObjectCreated) and r.key == key for r in records):
                original = message
    consumer.close()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(topic, original.value(), key=original.key())  # MinIO repeating itself
    producer.flush(10)
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed"
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        count = await connection.fetchval("select count(*) from jobs where source_key = $1", key)
    finally:
        await connection.close()
    assert count == 1
    listed = list(
        make_client(settings).list_objects(settings.output_bucket, prefix=f"{job['id']}/", recursive=True)
    )
    assert len(listed) == 1, "one output"


def _vfr_source(path: Path) -> Path:
    from tests.support.clips import run

    # 30 fps for half a second, then every other frame kept with its own timestamp (15 fps)
    run("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=30:duration=2", "-vf", "select='lt(n\\,15)+not(mod(n\\,2))'",
        "-fps_mode", "vfr", "-c:v", "ffv1", str(path))  # fmt: skip
    return path


def _frame_times(path: Path) -> list[Fraction]:
    """Presentation times of the video packets, exact (packet pts × stream time base), sorted."""
    import json
    import subprocess

    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts:stream=time_base",
         "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    probed = json.loads(out.stdout)
    tick = Fraction(probed["streams"][0]["time_base"])
    return sorted(int(p["pts"]) * tick for p in probed["packets"])


async def test_variable_frame_rate_input_with_a_target_rate_is_made_constant_and_the_job_says_so(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    source = _vfr_source(workdir / "vfr.mkv")
    key = f"e2e/{unique}/vfr.mkv"
    drop_source(settings, source, key, **{"target-fps": "40", "engine": "flow"})
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", job["error_message"]
    async with httpx.AsyncClient(base_url=settings.api_url) as client:
        status = (await client.get(f"/api/status/{job['id']}")).json()
    assert status["plan"]["vfr_converted"] is True
    assert (status["timing"]["input"]["vfr"], status["timing"]["input"]["vfr_converted"]) == (True, True)
    result = video_stream(probe(download_output(settings, job, workdir / "out.mp4")))
    assert _rate(result) == 40, "constant output at the target rate"
    duration = float(Fraction(int(result["nb_read_frames"])) / _rate(result))
    assert abs(duration - 2.0) < 2 / 40


async def test_variable_frame_rate_input_with_a_multiplier_keeps_every_source_timestamp(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    source = _vfr_source(workdir / "vfr.mkv")
    key = f"e2e/{unique}/vfr-kept.mkv"
    drop_source(settings, source, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", job["error_message"]
    async with httpx.AsyncClient(base_url=settings.api_url) as client:
        status = (await client.get(f"/api/status/{job['id']}")).json()
    assert status["plan"]["vfr_kept"] is True
    assert (status["timing"]["input"]["vfr"], status["timing"]["input"]["vfr_converted"]) == (True, False)
    source_times = _frame_times(source)
    output_times = _frame_times(download_output(settings, job, workdir / "out.mp4"))
    assert len(output_times) == 2 * len(source_times)
    assert output_times[0::2] == source_times, "every source frame at its own timestamp"
    middles = [(a + b) / 2 for a, b in itertools.pairwise(source_times)]
    assert output_times[1:-1:2] == middles, "one added frame exactly half way through each interval"


async def test_rotation_colour_metadata_and_subtitles_are_kept(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    from tests.support.clips import run

    plain = panning_clip(workdir / "plain.mp4", width=160, height=96, seconds=1)
    subtitles = workdir / "subs.srt"
    subtitles.write_text("1\n00:00:00,100 --> 00:00:00,900\nhello from the source\n", encoding="utf-8")
    source = workdir / "phone.mp4"
    run("-i", str(plain.path), "-i", str(subtitles), "-map", "0", "-map", "1", "-c:v", "copy", "-c:a", "copy",
        "-c:s", "mov_text", "-metadata:s:v:0", "rotate=90", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-colorspace", "bt709", str(source))  # fmt: skip
    key = f"e2e/{unique}/phone.mp4"
    drop_source(settings, source, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", job["error_message"]
    out = download_output(settings, job, workdir / "out.mp4")
    before, after = probe(source), probe(out)

    def rotation(info: dict) -> object:  # type: ignore[type-arg]
        stream = video_stream(info)
        return [d.get("rotation") for d in stream.get("side_data_list", []) if "rotation" in d]

    assert rotation(after) == rotation(before) != []
    for field in ("color_space", "color_transfer", "color_primaries"):
        assert video_stream(after).get(field) == video_stream(before).get(field) == "bt709"
    assert [s["codec_name"] for s in after["streams"] if s["codec_type"] == "subtitle"] == ["mov_text"]
    assert decoded_audio_md5(out) == decoded_audio_md5(source)


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("empty.mp4", b"", "E_PROBE_EMPTY"),
        ("notes.mp4", b"these are my holiday notes, not a video\n" * 20, "E_PROBE_UNREADABLE"),
        ("playlist.mp4", b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXTINF:1,\nhttp://169.254.169.254/latest/meta-data\n#EXT-X-ENDLIST\n", "E_PROBE_FORMAT_NOT_ALLOWED"),
        ("concat.mp4", b"ffconcat version 1.0\nfile '/etc/passwd'\n", "E_PROBE_FORMAT_NOT_ALLOWED"),
    ],
)  # fmt: skip
async def test_hostile_files_fail_with_a_code_and_a_signed_webhook(
    pipeline: list[ServiceProcess],
    webhooks: WebhookReceiver,
    settings: CommonSettings,
    workdir: Path,
    unique: str,
    name: str,
    content: bytes,
    code: str,
) -> None:
    path = workdir / name
    path.write_bytes(content)
    key = f"e2e/{unique}/-rf $(touch pwned) ..{name}"
    drop_source(settings, path, key, **{"webhook-url": webhooks.url})
    job = await wait_for_job(settings, key=key, timeout_s=60)
    assert job["status"] == "failed"
    assert job["error_code"] == code
    assert job["error_message"]
    await eventually(lambda: webhooks.for_job(str(job["id"])), 30, "the webhook", fail=False)
    [delivery] = webhooks.for_job(str(job["id"]))
    payload = Webhook(settings.webhook_secret.get_secret_value()).verify(
        delivery["body"], delivery["headers"]
    )
    assert payload["type"] == "job.failed"
    assert payload["data"]["error"]["code"] == code
    assert all(service.alive() for service in pipeline), "no service crashed"
    assert not (Path.cwd() / "pwned").exists()


async def test_a_jobs_whole_story_can_be_followed_by_its_id_across_services(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    import json

    clip = panning_clip(workdir / "story.mp4", width=160, height=96, seconds=1, audio=False)
    key = f"e2e/{unique}/story.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="flow")
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed"
    job_id = str(job["id"])
    stages: dict[str, set[str]] = {}
    for service in pipeline:
        for line in service.log.read_text(errors="replace").splitlines():
            if job_id not in line:
                continue
            record = json.loads(line)  # every line is one JSON object
            if record.get("job_id") != job_id:
                # another job's line may point at this one (a chunk paused for it, a record that rang
                # for it), always in a field named for what it is
                assert any(k.endswith("job_id") and v == job_id for k, v in record.items()), record
                continue
            stages.setdefault(service.name.split("-")[0], set()).add(str(record.get("event")))
    assert {"ingest", "splitter", "gpu_interp", "muxer"} <= set(stages), stages
    assert "job completed" in stages["muxer"]
