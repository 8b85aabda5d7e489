"""The HTTP API against the real stack: upload → 202 → status; every error path has its code."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, update
from sqlmodel import col

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import Job
from infiniteflow_common.events import JobSplit, VideoUploaded, decode_event
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.runtime import Runtime
from services.ingest.config import IngestSettings
from services.ingest.source_events import SourceEventHandler
from tests.integration.ingest_support import (
    MinioEventTail,
    api_client,
    isolated_settings,
    jobs_for,
    private_job_topics,
    private_runtime,
    records_keyed,
    starter_for,
    upload,
)
from tests.support.clips import video
from tests.support.queues import QueueOfThree

pytestmark = [pytest.mark.kafka, pytest.mark.minio, pytest.mark.postgres, pytest.mark.ffmpeg]

SETTINGS = isolated_settings()
CATALOG = SchemaCatalog.load()


@pytest.fixture(scope="module")
def topics() -> Iterator[tuple[str, str]]:
    with private_job_topics(SETTINGS, "api") as pair:
        yield pair


@pytest.fixture(scope="module")
async def runtime() -> AsyncIterator[Runtime]:
    async with private_runtime(SETTINGS) as rt:
        yield rt


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return video(tmp_path_factory.mktemp("api") / "clip.mp4", seconds=1).read_bytes()


def _client(
    runtime: Runtime, topics: tuple[str, str], settings: IngestSettings = SETTINGS, **deps: Any
) -> httpx.AsyncClient:
    return api_client(runtime, settings, topics, **deps)


@pytest.fixture
async def client(runtime: Runtime, topics: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(runtime, topics) as c:
        yield c


async def test_an_upload_is_accepted_and_its_status_shows_the_probe(
    client: httpx.AsyncClient, runtime: Runtime, topics: tuple[str, str], clip: bytes
) -> None:
    response = await client.post(
        "/api/upload",
        files={"file": ("../../my holiday $(id).mp4", clip, "video/mp4")},
        data={"target_fps": "60000/1001", "webhook_url": "http://127.0.0.1:1/hook", "model": "v4.25"},
    )

    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["job_id"]
    assert body["status_url"] == f"/api/status/{job_id}"
    assert body["download_url"] == f"/api/download/{job_id}"
    assert body["key"].startswith("api/")
    assert body["key"].endswith("/my_holiday_id_.mp4")
    status = (await client.get(body["status_url"])).json()
    assert status["status"] == "pending"
    assert 0 <= status["progress"] <= 100
    assert status["error"] is None
    assert status["params"]["target_fps"] == "60000/1001"
    assert status["params"]["webhook_url"] == "http://127.0.0.1:1/hook"
    assert status["params"]["model"] == "v4.25"
    assert status["probe"]["width"] == 320
    assert status["probe"]["fps"] == "30"
    assert status["output_fps"] == "60000/1001"
    assert status["source"] == {"type": "api", "bucket": SETTINGS.incoming_bucket, "key": body["key"]}
    assert status["chunks"] == {"done": 0, "total": None}
    assert status["timings"]["created_at"]
    assert status["timings"]["completed_at"] is None
    assert len(records_keyed(SETTINGS, topics[0], job_id)) == 1


async def test_the_minio_event_of_an_api_upload_finds_the_same_job(
    client: httpx.AsyncClient, runtime: Runtime, topics: tuple[str, str], clip: bytes
) -> None:
    tail = MinioEventTail(SETTINGS)
    try:
        response = await client.post("/api/upload", files={"file": ("c.mp4", clip)})
        assert response.status_code == 202, response.text
        key = response.json()["key"]
        raw, record = tail.wait_for(key)
    finally:
        tail.close()
    handler = SourceEventHandler(
        incoming_bucket=SETTINGS.incoming_bucket, start_job=starter_for(runtime, SETTINGS, *topics)
    )
    await handler(Delivery("minio.events", 0, 0, None, raw, {}))

    [job] = await jobs_for(runtime, SETTINGS.incoming_bucket, key)
    assert str(job.id) == response.json()["job_id"]
    assert job.source == "api"
    assert job.source_etag == record.etag
    assert len(records_keyed(SETTINGS, topics[0], str(job.id))) == 1


async def test_an_api_upload_with_priority_40_makes_a_job_of_priority_40(
    client: httpx.AsyncClient, runtime: Runtime, topics: tuple[str, str], clip: bytes
) -> None:
    response = await client.post("/api/upload", files={"file": ("urgent.mp4", clip)}, data={"priority": "40"})

    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    [job] = await jobs_for(runtime, SETTINGS.incoming_bucket, response.json()["key"])
    assert job.priority == 40
    status = (await client.get(f"/api/status/{job_id}")).json()
    assert (status["priority"], status["params"]["priority"]) == (40, 40)
    [message] = records_keyed(SETTINGS, topics[0], job_id)
    assert decode_event(CATALOG, message.value(), VideoUploaded).params.priority == 40


async def test_a_bucket_drop_with_priority_metadata_makes_a_job_of_that_priority(
    runtime: Runtime, topics: tuple[str, str], clip: bytes, unique: str
) -> None:
    key = f"drops/{unique}/late.mp4"
    tail = MinioEventTail(SETTINGS)
    try:
        upload(runtime, SETTINGS, key, clip, {"priority": "-15"})  # sent as x-amz-meta-priority
        raw, _record = tail.wait_for(key)
    finally:
        tail.close()
    handler = SourceEventHandler(
        incoming_bucket=SETTINGS.incoming_bucket, start_job=starter_for(runtime, SETTINGS, *topics)
    )

    await handler(Delivery("minio.events", 0, 0, None, raw, {}))

    [job] = await jobs_for(runtime, SETTINGS.incoming_bucket, key)
    assert (job.status, job.priority, job.params.priority) == ("pending", -15, -15)


async def test_download_is_409_until_completed_then_a_redirect(
    client: httpx.AsyncClient, runtime: Runtime, clip: bytes
) -> None:
    job_id = (await client.post("/api/upload", files={"file": ("c.mp4", clip)})).json()["job_id"]

    pending = await client.get(f"/api/download/{job_id}")
    assert pending.status_code == 409
    assert pending.json()["error"]["code"] == "E_JOB_NOT_READY"

    async with runtime.sessions() as session, session.begin():
        await session.execute(
            update(Job)
            .where(col(Job.id) == uuid.UUID(job_id))
            .values(status="completed", progress=100, output_bucket="outputs", output_key=f"{job_id}/out.mp4")
        )
    done = await client.get(f"/api/download/{job_id}")
    assert done.status_code == 307
    assert f"/outputs/{job_id}/out.mp4?" in done.headers["location"]
    assert "X-Amz-Signature=" in done.headers["location"]
    assert (await client.get(f"/api/status/{job_id}")).json()["download_url"] == f"/api/download/{job_id}"


async def test_a_refused_file_is_accepted_as_a_failed_job_with_a_clear_download_error(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/upload", files={"file": ("x.mp4", b"not a video at all")})
    assert response.status_code == 202
    assert response.json()["status"] == "failed"
    job_id = response.json()["job_id"]
    status = (await client.get(f"/api/status/{job_id}")).json()
    assert status["error"]["code"] == "E_PROBE_UNREADABLE"
    download = await client.get(f"/api/download/{job_id}")
    assert download.status_code == 409
    assert download.json()["error"]["code"] == "E_JOB_FAILED"
    assert download.json()["error"]["job_error"]["code"] == "E_PROBE_UNREADABLE"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"multiplier": "3"}, "multiplier"),
        ({"engine": "dain"}, "engine"),
        ({"model": "v5"}, "model"),
        ({"priority": "51"}, "priority"),
        ({"priority": "soon"}, "priority"),
        ({"webhook_url": "ftp://x"}, "webhook-url"),
    ],
)
async def test_bad_options_are_422_before_anything_is_stored(
    client: httpx.AsyncClient, clip: bytes, data: dict[str, str], field: str
) -> None:
    response = await client.post("/api/upload", files={"file": ("c.mp4", b"x")}, data=data)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "E_PARAM_INVALID"
    assert field in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("webhook_url", "code"),
    [
        ("http://" + "a" * 64 + ".example.com/hook", "E_WEBHOOK_URL_INVALID"),
        ("http://hooks..example.com/hook", "E_WEBHOOK_URL_INVALID"),
        ("http://100.100.100.200/latest/meta-data/", "E_WEBHOOK_DESTINATION_REFUSED"),
        ("http://[fd00:ec2::254]/hook", "E_WEBHOOK_DESTINATION_REFUSED"),
        ("http://10.0.0.7:8080/hook", "E_WEBHOOK_DESTINATION_REFUSED"),
    ],
)
async def test_a_webhook_url_with_a_malformed_host_or_a_non_public_address_is_422(
    client: httpx.AsyncClient, runtime: Runtime, webhook_url: str, code: str, unique: str
) -> None:
    response = await client.post(
        "/api/upload", files={"file": (f"{unique}.mp4", b"x")}, data={"webhook_url": webhook_url}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert "webhook-url" in response.json()["error"]["message"]
    stored = runtime.storage.list_objects(SETTINGS.incoming_bucket, recursive=True)
    assert not [o for o in stored if str(o.object_name).endswith(f"/{unique}.mp4")], "nothing is stored"


async def test_a_form_without_a_file_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/upload", data={"multiplier": "2"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "E_REQUEST_INVALID"


async def test_an_upload_over_the_limit_is_413(runtime: Runtime, topics: tuple[str, str]) -> None:
    small = isolated_settings(incoming_bucket=SETTINGS.incoming_bucket, max_upload_bytes=100_000)
    async with _client(runtime, topics, small) as client:
        response = await client.post("/api/upload", files={"file": ("big.mp4", b"\0" * 300_000)})
        ok_size = await client.post("/api/upload", files={"file": ("small.mp4", b"\0" * 1000)})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "E_UPLOAD_TOO_LARGE"
    assert ok_size.status_code == 202


async def test_an_upload_over_the_limit_without_content_length_is_cut_off_while_streaming(
    runtime: Runtime, topics: tuple[str, str]
) -> None:
    small = isolated_settings(incoming_bucket=SETTINGS.incoming_bucket, max_upload_bytes=100_000)
    boundary = "b0undary"

    async def body() -> AsyncIterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.mp4"\r\n\r\n'.encode()
        for _ in range(100):  # 6.4 MB, far past the limit
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    async with _client(runtime, topics, small) as client:
        response = await client.post(
            "/api/upload",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "E_UPLOAD_TOO_LARGE"


async def test_unknown_jobs_are_404_and_malformed_ids_422(client: httpx.AsyncClient) -> None:
    for path in (f"/api/status/{uuid.uuid4()}", f"/api/download/{uuid.uuid4()}"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "E_JOB_NOT_FOUND"
    for path in ("/api/status/not-a-uuid", "/api/download/1%20OR%201=1"):
        response = await client.get(path)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "E_REQUEST_INVALID"
    missing = await client.get("/api/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "E_NOT_FOUND"


async def test_health_checks_every_component(runtime: Runtime, topics: tuple[str, str]) -> None:
    async with _client(runtime, topics) as client:
        healthy = await client.get("/health")
    assert healthy.status_code == 200, healthy.text
    assert {name: c["status"] for name, c in healthy.json()["components"].items()} == {
        "kafka": "ok",
        "minio": "ok",
        "postgres": "ok",
    }

    async def kafka_down() -> None:
        raise ConnectionError("broker unreachable at 10.9.8.7:9092 as user kafka-admin")

    async with _client(runtime, topics, kafka_check=kafka_down) as client:
        degraded = await client.get("/health")
    assert degraded.status_code == 503
    assert degraded.json()["components"]["kafka"]["status"] == "down"
    assert degraded.json()["components"]["postgres"]["status"] == "ok"
    # anyone may call /health: what failed, never the exception's text (addresses, accounts)
    assert "10.9.8.7" not in degraded.text
    assert "kafka-admin" not in degraded.text
    assert "ConnectionError" not in degraded.text


async def test_openapi_documents_the_paths(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert {"/api/upload", "/api/status/{job_id}", "/api/download/{job_id}", "/health"} <= set(
        schema["paths"]
    )
    assert "multipart/form-data" in schema["paths"]["/api/upload"]["post"]["requestBody"]["content"]
    assert (await client.get("/docs")).status_code == 200


async def test_status_and_the_event_stream_leave_out_the_per_frame_timestamps(
    client: httpx.AsyncClient, runtime: Runtime, unique: str
) -> None:
    pts = tuple(range(0, 3_000_000, 30))  # a long VFR job: 100 000 timestamps
    plan = JobSplit(
        job_id=uuid.uuid4(), chunk_count=3, source_frame_count=len(pts), in_fps_num=30, in_fps_den=1,
        out_fps_num=60, out_fps_den=1, out_frame_count=2 * len(pts), scene_cuts=(), vfr_converted=False,
        split_at=datetime.now(UTC), vfr_kept=True, vfr_time_base_num=1, vfr_time_base_den=90000, vfr_pts=pts,
    )  # fmt: skip
    shown = {
        "in_rate": "30/1", "out_rate": "60/1", "source_frames": len(pts), "out_frames": 2 * len(pts),
        "scene_starts": [], "chunk_count": 3, "duplicates_skipped": 0, "vfr_converted": False, "vfr_kept": True,
        "encoder": None,
    }  # fmt: skip
    job_id = uuid.uuid4()
    async with runtime.sessions() as session, session.begin():
        session.add(
            Job(id=job_id, source="bucket", source_bucket=SETTINGS.incoming_bucket, source_key=f"tests/{unique}/vfr.mp4",
                source_etag="e", status="failed", error_code="E_TEST", params={}, plan=plan)
        )  # fmt: skip
    try:
        status = await client.get(f"/api/status/{job_id}")
        events = await client.get(f"/api/events/{job_id}")
    finally:
        async with runtime.sessions() as session, session.begin():
            await session.execute(delete(Job).where(col(Job.id) == job_id))
    assert status.status_code == 200
    assert status.json()["plan"] == shown
    assert len(status.content) < 10_000
    [data] = [line for line in events.text.splitlines() if line.startswith("data:")]
    assert json.loads(data.removeprefix("data:"))["plan"] == shown


async def test_a_queued_job_shows_its_place_and_estimated_start_and_a_started_one_none(
    client: httpx.AsyncClient, queue_of_three: QueueOfThree
) -> None:
    high = (await client.get(f"/api/status/{queue_of_three.high}")).json()["queue"]
    low = (await client.get(f"/api/status/{queue_of_three.low}")).json()["queue"]
    running = (await client.get(f"/api/status/{queue_of_three.running}")).json()

    assert (high["position"], high["jobs_ahead"], low["position"], low["jobs_ahead"]) == (1, 0, 2, 1)
    assert datetime.fromisoformat(high["estimated_start"]) > datetime.now(UTC)
    assert 0 < high["estimated_wait_s"] < low["estimated_wait_s"]
    assert running["queue"] is None
    listed = {job["job_id"]: job["queue"] for job in (await client.get("/api/jobs?limit=100")).json()["jobs"]}
    assert listed[str(queue_of_three.high)]["position"] == 1
