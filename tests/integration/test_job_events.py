"""Job changes reach the API's event streams from PostgreSQL NOTIFY, not from polling.

Runs against the real PostgreSQL (migrated to head by `make up`): a job row is written and moved
forward in committed transactions, and the hub's subscriber and the SSE endpoint see each change.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from infiniteflow_common.db import make_engine, session_factory
from infiniteflow_common.settings import CommonSettings
from services.ingest.api import ApiDeps, create_api
from services.ingest.config import IngestSettings
from services.ingest.job_events import JobEventHub
from tests.support.waiting import eventually

pytestmark = [pytest.mark.postgres]


def _dsn(settings: CommonSettings) -> str:
    return settings.database_url.get_secret_value().replace("+asyncpg", "")


@pytest.fixture
async def hub(settings: CommonSettings) -> AsyncIterator[JobEventHub]:
    """A hub listening on the real database."""
    events = JobEventHub(settings.database_url.get_secret_value())
    task = asyncio.create_task(events.run_forever())
    try:
        await asyncio.wait_for(events.connected.wait(), timeout=10)
        yield events
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def job_id(settings: CommonSettings, unique: str) -> AsyncIterator[uuid.UUID]:
    """A job row of this test's own (deleted afterwards)."""
    value = uuid.uuid4()
    connection = await asyncpg.connect(_dsn(settings))
    try:
        await connection.execute(
            "insert into jobs (id, source, source_bucket, source_key, source_etag, status, params)"
            " values ($1, 'api', 'incoming', $2, $3, 'pending', '{}'::jsonb)",
            value,
            f"events/{unique}.mp4",
            unique,
        )
        yield value
    finally:
        await connection.execute("delete from jobs where id = $1", value)
        await connection.close()


async def _update(settings: CommonSettings, job_id: uuid.UUID, sql: str) -> None:
    connection = await asyncpg.connect(_dsn(settings))
    try:
        await connection.execute(f"update jobs set {sql} where id = $1", job_id)  # noqa: S608 - literals
    finally:
        await connection.close()


async def _next(queue: asyncio.Queue[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(queue.get(), timeout=10)


async def test_each_committed_status_or_progress_change_is_pushed_to_subscribers(
    hub: JobEventHub, job_id: uuid.UUID, settings: CommonSettings
) -> None:
    async with hub.subscribe(job_id) as queue, hub.subscribe(uuid.uuid4()) as other:
        await _update(settings, job_id, "status = 'splitting', progress = 5")
        event = await _next(queue)
        if event["status"] == "pending":  # the fixture's insert, delivered (in commit order) just now
            event = await _next(queue)
        assert (event["job_id"], event["status"], event["progress"]) == (str(job_id), "splitting", 5)
        await _update(settings, job_id, "updated_at = now()")  # no visible change: no event
        await _update(settings, job_id, "progress = 40, chunks_done = 2, chunks_total = 4")
        event = await _next(queue)
        assert (event["progress"], event["chunks_done"], event["chunks_total"]) == (40, 2, 4)
        assert queue.empty()
        assert other.empty()


async def test_the_event_stream_sends_the_status_at_each_change_and_ends_when_final(
    hub: JobEventHub, job_id: uuid.UUID, settings: CommonSettings
) -> None:
    engine: AsyncEngine = make_engine(settings.database_url.get_secret_value())
    api = create_api(
        ApiDeps(
            settings=IngestSettings(),
            sessions=session_factory(engine),
            storage=None,  # type: ignore[arg-type]  # not used by the event stream
            starter=None,  # type: ignore[arg-type]
            kafka_check=lambda: asyncio.sleep(0),
            job_events=hub,
        )
    )
    received: list[dict[str, Any]] = []
    # a real server: httpx's ASGI transport would buffer the whole (endless) response
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=0, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, 10, interval_s=0.05)
    port = server.servers[0].sockets[0].getsockname()[1]

    async def read_stream() -> None:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
            client.stream("GET", f"/api/events/{job_id}") as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    received.append(json.loads(line.removeprefix("data:").strip()))

    try:
        reader = asyncio.create_task(read_stream())
        changes = (
            "status = 'splitting', progress = 5",
            "status = 'interpolating', progress = 50",
            "status = 'completed', progress = 100",
        )
        for seen, sql in enumerate(changes, start=1):  # one change at a time, each seen before the next
            await eventually(lambda seen=seen: len(received) >= seen, 10, interval_s=0.05)
            await _update(settings, job_id, sql)
        await asyncio.wait_for(reader, timeout=10)  # the stream ends by itself at a final status
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)
        await engine.dispose()
    assert [(r["status"], r["progress"]) for r in received] == [
        ("pending", 0),
        ("splitting", 5),
        ("interpolating", 50),
        ("completed", 100),
    ]
    assert received[-1]["download_url"] == f"/api/download/{job_id}"
