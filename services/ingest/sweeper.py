"""The sweeper: start objects in the incoming bucket whose MinIO event never became a job.

MinIO's Kafka target can drop events (acks=1, a lossy queue, Kafka down during an upload). Every
`sweeper_interval_s` the sweeper lists the bucket and starts, with source "sweeper", each object older
than `sweeper_min_age_s` that has no job by (bucket, key, etag) — or whose job is still `pending`
without a probe that long after its last update (a start that died half way). Starting is idempotent,
so racing the real event or another replica's sweep is harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from minio import Minio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.domain import JobStatus
from infiniteflow_common.jobs import source_jobs
from infiniteflow_common.minio_events import META_PREFIX
from infiniteflow_common.observability import get_logger
from services.ingest import metrics
from services.ingest.config import IngestSettings
from services.ingest.start import JobStarter, StartResult, object_record

log = get_logger()
BATCH = 500


@dataclass(frozen=True)
class ListedObject:
    """One object of a bucket listing."""

    key: str
    etag: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class KnownJob:
    """What the sweeper needs to know about an object's existing job."""

    status: str
    has_probe: bool
    updated_at: datetime


def select_orphans(
    objects: Iterable[ListedObject],
    jobs: Mapping[tuple[str, str], KnownJob],
    *,
    now: datetime,
    min_age: timedelta,
) -> list[ListedObject]:
    """Objects to start (pure): old enough, not a folder marker, and without a job that got going."""
    chosen = []
    for obj in objects:
        if obj.key.endswith("/") or now - obj.last_modified < min_age:
            continue
        job = jobs.get((obj.key, obj.etag))
        stalled = (
            job is not None
            and job.status == JobStatus.PENDING.value
            and not job.has_probe
            and now - job.updated_at >= min_age
        )
        if job is None or stalled:
            chosen.append(obj)
    return chosen


def user_metadata(headers: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> dict[str, str]:
    """`X-Amz-Meta-Target-Fps: 60` → `{"target-fps": "60"}`, as the event parser names them."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {
        name.lower().removeprefix(META_PREFIX): str(value)
        for name, value in items
        if name.lower().startswith(META_PREFIX)
    }


class Sweeper:
    """Lists the incoming bucket and starts its orphaned objects."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        storage: Minio,
        starter: JobStarter,
        settings: IngestSettings,
    ) -> None:
        self.sessions = sessions
        self.storage = storage
        self.starter = starter
        self.settings = settings

    async def sweep_once(
        self, *, prefix: str | None = None, min_age_s: float | None = None
    ) -> list[StartResult]:
        """One pass over the bucket (or `prefix`); returns what it started."""
        bucket = self.settings.incoming_bucket
        min_age = timedelta(seconds=self.settings.sweeper_min_age_s if min_age_s is None else min_age_s)
        listing = await asyncio.to_thread(
            lambda: iter(self.storage.list_objects(bucket, prefix=prefix, recursive=True))
        )
        started: list[StartResult] = []
        while batch := await asyncio.to_thread(lambda: list(islice(listing, BATCH))):
            objects = [
                ListedObject(str(o.object_name), str(o.etag or ""), int(o.size or 0), o.last_modified)
                for o in batch
                if o.last_modified is not None and not o.is_dir
            ]
            known = await self._known_jobs(bucket, [o.key for o in objects])
            for obj in select_orphans(objects, known, now=datetime.now(UTC), min_age=min_age):
                result = await self._start(bucket, obj)
                if result is not None:
                    started.append(result)
        return started

    async def _known_jobs(self, bucket: str, keys: Sequence[str]) -> dict[tuple[str, str], KnownJob]:
        if not keys:
            return {}
        async with self.sessions() as session:
            rows = await source_jobs(session, bucket, keys)
        return {
            (key, etag): KnownJob(status, has_probe, updated_at)
            for key, etag, status, has_probe, updated_at in rows
        }

    async def _start(self, bucket: str, obj: ListedObject) -> StartResult | None:
        try:
            stat = await asyncio.to_thread(self.storage.stat_object, bucket, obj.key)
            if str(stat.etag or "").strip('"') != obj.etag:
                metrics.SWEPT.labels("changed").inc()
                return None  # replaced since the listing: the next sweep sees the new version
            record = object_record(
                bucket=bucket,
                key=obj.key,
                etag=obj.etag,
                size=int(stat.size or obj.size),
                metadata=user_metadata(stat.metadata or {}),
                version_id=stat.version_id,
                created_at=obj.last_modified,
            )
            result = await self.starter.start(record, source="sweeper")
        except Exception as exc:
            # One object's trouble must not stop the sweep; the next pass tries again.
            metrics.SWEPT.labels("error").inc()
            log.warning("sweeper could not start an object", key=obj.key, error=repr(exc))
            return None
        metrics.SWEPT.labels("started" if result.handled_now else "already_handled").inc()
        log.info("sweeper started an orphaned object", job_id=str(result.job_id), key=obj.key)
        return result

    async def run_forever(self) -> None:
        """Sweep every `sweeper_interval_s`; a failed pass is logged and retried on the next tick."""
        while True:
            try:
                await self.sweep_once()
            except Exception as exc:
                metrics.SWEPT.labels("sweep_failed").inc()
                log.warning("sweep failed", error=repr(exc))
            await asyncio.sleep(self.settings.sweeper_interval_s)
