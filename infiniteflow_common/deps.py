"""What a pipeline handler talks to, passed in as one object so handlers stay free of wiring."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from minio import Minio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.events import Event


class Publish(Protocol):
    """Publishes an event (keyed by its job_id unless `key` is given) and waits for the broker's acks."""

    def __call__(
        self, topic: str, event: Event, *, key: str | None = None, partition: int | None = None
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class Deps:
    """The database, the object store, the schema catalog and the producer of one service process."""

    sessions: async_sessionmaker[AsyncSession]
    storage: Minio
    catalog: SchemaCatalog
    publish: Publish


class PipelineHandler:
    """Base of the splitter, worker and muxer handlers: their dependencies as attributes."""

    def __init__(self, deps: Deps) -> None:
        self.sessions = deps.sessions
        self.storage = deps.storage
        self.catalog = deps.catalog
        self.publish = deps.publish
