"""End-to-end fixtures: the whole pipeline as real processes on the real stack."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from infiniteflow_common.settings import CommonSettings
from tests.e2e.pipeline import ServiceProcess, WebhookReceiver, running_pipeline, webhook_receiver


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    """Ingest, splitter, two gpu_interp workers, muxer and notifier, with short chunks so jobs spread.

    Module-scoped: the services stop before the next module, so no pipeline consumer (the notifier's
    delivery loop above all) runs beside the integration tests, which drive handlers themselves.
    """
    logs = tmp_path_factory.mktemp("service-logs")
    with running_pipeline(logs, CHUNK_FRAMES="10", SWEEPER_INTERVAL_S="3", SWEEPER_MIN_AGE_S="5") as services:
        yield services
    print(f"service logs: {logs}")


@pytest.fixture(scope="module")
def webhooks() -> Iterator[WebhookReceiver]:
    """A webhook endpoint that records what it receives."""
    with webhook_receiver() as receiver:
        yield receiver


async def job_row(
    settings: CommonSettings, *, key: str | None = None, job_id: str | None = None
) -> dict[str, Any] | None:
    """The job for a source key (or id), as a dict."""
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        if job_id:
            row = await connection.fetchrow("select * from jobs where id = $1::uuid", job_id)
        else:
            row = await connection.fetchrow("select * from jobs where source_key = $1", key)
        return dict(row) if row else None
    finally:
        await connection.close()


async def wait_for_job(
    settings: CommonSettings, *, key: str | None = None, job_id: str | None = None, timeout_s: float = 240
) -> dict[str, Any]:
    """Poll until the job is final; fail with its state when the deadline passes."""
    import asyncio

    deadline = time.monotonic() + timeout_s
    row: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        row = await job_row(settings, key=key, job_id=job_id)
        if row and row["status"] in ("completed", "completed_with_warnings", "failed", "cancelled"):
            return row
        await asyncio.sleep(0.5)
    raise AssertionError(f"job not final after {timeout_s}s: {row}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
