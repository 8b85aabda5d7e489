"""The database schema is owned by Alembic: it builds an empty database and round-trips."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from infiniteflow_common import migrate
from infiniteflow_common.settings import CommonSettings

pytestmark = [pytest.mark.postgres]
TABLES = {
    "tenants",
    "api_keys",
    "rate_windows",
    "webhook_endpoints",
    "jobs",
    "chunks",
    "webhook_deliveries",
    "processed_events",
    "webhooks",
    "kafka_outbox",
}


def _dsn(url: str) -> str:
    return url.replace("+asyncpg", "")


@pytest.fixture
async def empty_database(settings: CommonSettings, unique: str) -> AsyncIterator[str]:
    """A freshly created, empty database (dropped afterwards); yields its SQLAlchemy URL."""
    url = make_url(settings.database_url.get_secret_value())
    name = f"migrations_{unique}"
    admin = await asyncpg.connect(_dsn(url.render_as_string(hide_password=False)))
    await admin.execute(f'create database "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


async def _tables(url: str) -> set[str]:
    connection = await asyncpg.connect(_dsn(url))
    try:
        rows = await connection.fetch("select tablename from pg_tables where schemaname = 'public'")
        return {r["tablename"] for r in rows} - {"alembic_version"}
    finally:
        await connection.close()


async def test_upgrade_builds_an_empty_database(empty_database: str) -> None:
    assert await _tables(empty_database) == set()
    migrate.upgrade(empty_database)
    assert await _tables(empty_database) == TABLES


async def test_downgrade_then_upgrade_round_trips(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    migrate.downgrade(empty_database, "base")
    assert await _tables(empty_database) == set()
    migrate.upgrade(empty_database)
    assert await _tables(empty_database) == TABLES


async def test_a_job_is_unique_by_its_source_object(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    connection = await asyncpg.connect(_dsn(empty_database))
    insert = (
        "insert into jobs (id, source, source_bucket, source_key, source_etag) "
        "values (gen_random_uuid(), 'bucket', 'incoming', 'a.mp4', $1) on conflict do nothing"
    )
    try:
        assert await connection.execute(insert, "etag-1") == "INSERT 0 1"
        assert await connection.execute(insert, "etag-1") == "INSERT 0 0", "a replayed event creates no job"
        assert await connection.execute(insert, "etag-2") == "INSERT 0 1", "a new version of the object does"
    finally:
        await connection.close()


async def test_a_job_completed_with_warnings_is_kept_as_completed_when_migrated_down(
    empty_database: str,
) -> None:
    migrate.upgrade(empty_database)
    connection = await asyncpg.connect(_dsn(empty_database))
    insert = (
        "insert into jobs (id, source, source_bucket, source_key, source_etag, status, quality_psnr_db) "
        "values (gen_random_uuid(), 'bucket', 'incoming', 'a.mp4', 'e', 'completed_with_warnings', 19.5)"
    )
    try:
        assert await connection.execute(insert) == "INSERT 0 1"
        migrate.downgrade(empty_database, "0003")
        assert await connection.fetchval("select status from jobs") == "completed"
    finally:
        await connection.close()
