"""A test session that needs the stack stops the background services first and leaves nothing behind.

Runs a separate pytest session (tests/support/hygiene_session.py) that makes a mess, beside a stand-in
for a background service that `make demo` would have left running, and checks what is left afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from confluent_kafka import Consumer, TopicPartition
from minio.error import S3Error

from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from infiniteflow_common.storage import make_client
from infiniteflow_common.topics import Topic
from services import supervisor

pytestmark = [pytest.mark.postgres, pytest.mark.minio, pytest.mark.kafka]


async def _fetch(settings: CommonSettings, query: str, *args: object) -> object:
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _unconsumed(settings: CommonSettings, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        left = 0
        for committed in consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10):
            low, high = consumer.get_watermark_offsets(committed, timeout=10)
            left += high - (committed.offset if committed.offset >= 0 else low)
        return left
    finally:
        consumer.close()


def test_a_test_session_stops_the_demo_services_and_removes_everything_it_made(
    settings: CommonSettings, tmp_path: Path
) -> None:
    # a stand-in for a service `make demo` left running, registered where `infiniteflow services` looks
    # (started through a shell that exits, so init reaps it like a real detached service)
    launched = subprocess.run(
        ["sh", "-c", f"setsid {sys.executable} -c 'import time; time.sleep(300)' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    background = int(launched.stdout.strip())
    supervisor.PIDS.mkdir(parents=True, exist_ok=True)
    pid_file = supervisor.PIDS / f"hygiene-{uuid.uuid4().hex[:6]}.pid"
    pid_file.write_text(str(background))
    # made before the session: must survive it
    kept = str(uuid.uuid4())
    asyncio.run(
        _fetch(
            settings,
            "insert into jobs (id, source, source_bucket, source_key, source_etag, status, params, created_at,"
            " updated_at) values ($1::uuid, 'bucket', 'incoming', $2, 'e', 'completed', '{}'::jsonb, now(), now())"
            " returning id",
            kept,
            f"kept/{kept}.mp4",
        )
    )
    report = tmp_path / "made.json"
    try:
        session = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/support/hygiene_session.py",
            ],
            cwd=REPO_ROOT,
            env=os.environ | {"HYGIENE_REPORT": str(report)},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert session.returncode == 0, session.stdout + session.stderr
        assert "stopped the background services for this test run" in session.stdout
        assert "test run cleaned up after itself" in session.stdout
        assert not _alive(background), "the background service was stopped"
        assert not pid_file.exists()

        made = json.loads(report.read_text())
        assert (
            asyncio.run(_fetch(settings, "select count(*) from jobs where id = $1::uuid", made["job_id"]))
            == 0
        )
        assert (
            asyncio.run(_fetch(settings, "select count(*) from tenants where id = $1", made["tenant"])) == 0
        )
        endpoint = asyncio.run(
            _fetch(settings, "select count(*) from webhook_endpoints where url = $1", made["endpoint"])
        )
        assert endpoint == 0
        client = make_client(settings)
        with pytest.raises(S3Error):
            client.stat_object(settings.incoming_bucket, made["object"])
        assert not client.bucket_exists(made["bucket"])
        assert not Path(made["target"]).exists()
        assert asyncio.run(_fetch(settings, "select count(*) from jobs where id = $1::uuid", kept)) == 1
        assert _unconsumed(settings, "notifier", Topic.JOB_CANCELLED.value) == 0
    finally:
        if _alive(background):
            os.kill(background, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
        asyncio.run(_fetch(settings, "delete from jobs where id = $1::uuid returning 1", kept))
