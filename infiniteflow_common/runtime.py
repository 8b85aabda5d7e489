"""The composition root every service shares: broker, schema catalog, database, object store, metrics.

A service's `app.py` builds one `Runtime` from its settings, registers its consumers, and calls
`run()`. Nothing is opened at import time; `run()` opens, serves until SIGTERM/SIGINT (or until a
consumer gives up), then closes in reverse order. A consumer that gives up makes the process exit
non-zero without committing, so a supervisor restarts it where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from functools import cached_property
from pathlib import Path
from typing import Any

from faststream.confluent import KafkaBroker
from minio import Minio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import make_engine, session_factory
from infiniteflow_common.deps import Deps
from infiniteflow_common.errors import InvalidMessage
from infiniteflow_common.events import Event, encode_event
from infiniteflow_common.failures import report_failure
from infiniteflow_common.health import GroupMembership, Health, start_http_endpoints
from infiniteflow_common.kafka import (
    ConsumerStopped,
    Delivery,
    Handler,
    ReliableConsumer,
    job_id_from_key,
    make_broker,
    subscribe,
)
from infiniteflow_common.observability import configure_logging, get_logger
from infiniteflow_common.outbox import Outbox
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import permanent_storage_failure
from infiniteflow_common.topics import dlq_of

log = get_logger()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def sweep_stale_targets(directory: Path) -> list[Path]:
    """Remove the Prometheus target files of processes that no longer run; returns those removed.

    A target file names its process in the `pid` label (`<service>-<pid>.json`). Files without one
    are left alone: they are not ours.
    """
    removed: list[Path] = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            groups = json.loads(path.read_text(encoding="utf-8"))
            pid = int(groups[0]["labels"]["pid"])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue
        if not _pid_alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class Runtime:
    """Shared resources of one service process, created lazily and closed by `run()`."""

    def __init__(self, settings: CommonSettings, service: str) -> None:
        self.settings = settings
        self.service = service
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.consumers: list[ReliableConsumer] = []
        self._max_poll_interval_ms = 0
        self._background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.health = Health(service, group_grace_s=settings.kafka_group_grace_s)

    @cached_property
    def broker(self) -> KafkaBroker:
        """The service's Kafka broker (idempotent producer, acks=all)."""
        return make_broker(self.settings, self.service)

    @cached_property
    def catalog(self) -> SchemaCatalog:
        """Every Avro schema version in `schemas/avro`."""
        return SchemaCatalog.load()

    @cached_property
    def engine(self) -> AsyncEngine:
        """The asyncpg engine."""
        return make_engine(self.settings.database_url.get_secret_value())

    @cached_property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """Factory of database sessions."""
        return session_factory(self.engine)

    @cached_property
    def storage(self) -> Minio:
        """The object store client."""
        from infiniteflow_common.storage import make_client

        return make_client(self.settings)

    @cached_property
    def deps(self) -> Deps:
        """What the pipeline handlers talk to."""
        return Deps(sessions=self.sessions, storage=self.storage, catalog=self.catalog, publish=self.publish)

    @cached_property
    def outbox(self) -> Outbox:
        """The Kafka outbox: events staged in a transaction, published by this broker after it commits."""
        return Outbox(self.sessions, self.catalog, self.send)

    async def send(self, value: bytes, topic: str, key: str | None) -> None:
        """Publish encoded bytes (an outbox row) to `topic` under `key`; waits for acks=all."""
        await self.broker.publish(value, topic=topic, key=key)

    async def publish(
        self, topic: str, event: Event, *, key: str | None = None, partition: int | None = None
    ) -> None:
        """Publish an event, keyed by its job_id unless `key` says otherwise; waits for acks=all."""
        job_id = getattr(event, "job_id", None)
        await self.broker.publish(
            encode_event(self.catalog, event),
            topic=topic,
            key=key or (str(job_id) if job_id else None),
            partition=partition,
        )

    def consume(
        self, topic: str, handler: Handler, *, max_poll_interval_ms: int = 300_000
    ) -> ReliableConsumer:
        """Have `handler` consume `topic` in the service's consumer group (subscribed when `run()` starts)."""
        consumer = ReliableConsumer(
            broker=self.broker,
            catalog=self.catalog,
            service=self.service,
            topic=topic,
            handler=handler,
            settings=self.settings,
            # an object gone, forbidden or replaced: no retry brings it back, so its record is
            # dead-lettered and its job fails with the object's code
            permanent_failure=permanent_storage_failure,
            on_fatal=self._on_fatal,
            on_dead_letter=self._fail_job_of,
        )
        self.consumers.append(consumer)
        self._max_poll_interval_ms = max(self._max_poll_interval_ms, max_poll_interval_ms)
        return consumer

    def background(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `task` alongside the consumers (an HTTP server, a sweeper); it ends the process when it ends."""
        self._background.append(task)

    def _register_target(self, port: int) -> Path | None:
        """Announce this process's /metrics to Prometheus (file-based service discovery).

        Files of processes that died without removing theirs (SIGKILL, a crash) are removed first, so
        Prometheus does not keep scraping dead targets and alerts do not fire on them.
        """
        directory = self.settings.prometheus_targets_dir
        if directory is None:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        sweep_stale_targets(directory)
        path = directory / f"{self.service}-{os.getpid()}.json"
        labels = {"service": self.service, "pid": str(os.getpid())}
        path.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": labels}]), encoding="utf-8")
        return path

    async def _fail_job_of(self, delivery: Delivery, error: InvalidMessage) -> None:
        """A dead-lettered pipeline record fails its job with the error's code.

        The job is the one the error names (`InvalidMessage.job_id`: a worker claimed another job's
        chunk), else the one the record's key names.
        """
        job_id = error.job_id or job_id_from_key(delivery.key)
        if job_id is None:
            return
        await report_failure(
            self.sessions,
            self.publish,
            job_id=uuid.UUID(job_id),
            stage=self.service,
            code=error.code,
            message=f"{error.message} (message {delivery.where} was moved to {dlq_of(delivery.topic)})",
        )
        # A failed job's work objects go with it, as on every other failure path (the lifecycle rule
        # stays the backstop when the store cannot be reached now).
        from infiniteflow_common.storage import delete_prefix

        try:
            await asyncio.to_thread(delete_prefix, self.storage, self.settings.work_bucket, f"{job_id}/")
        except Exception as exc:  # the job's failure is recorded; cleanup is best effort
            log.warning("work objects of a failed job not removed", job_id=job_id, error=str(exc))

    def _on_stuck(self, reason: str) -> None:
        """Liveness failed: stop with a distinct exit code so a supervisor starts a fresh process."""
        log.error("liveness failed; stopping for a restart", reason=reason)
        self.exit_code = 3
        self.stopping.set()

    def _on_fatal(self, reason: ConsumerStopped) -> None:
        self.exit_code = 1
        self.stopping.set()

    async def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        configure_logging(self.service, self.settings.log_level)
        target: Path | None = None
        if self.settings.metrics_port is not None:
            host = self.settings.metrics_host
            port = start_http_endpoints(self.health, host, self.settings.metrics_port)
            log.info("metrics and health endpoints", url=f"http://{host}:{port}/metrics")
            target = self._register_target(port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        async with AsyncExitStack() as stack:
            if self.consumers:
                self.health.membership = GroupMembership()
                subscribe(
                    self.broker,
                    *self.consumers,
                    group_id=self.service,
                    max_poll_interval_ms=self._max_poll_interval_ms,
                    membership=self.health.membership,
                    group_instance_id=self.settings.kafka_group_instance_id,
                )
            if self.consumers or "broker" in self.__dict__:
                await self.broker.start()
                stack.push_async_callback(self.broker.stop)
            if "engine" in self.__dict__:
                stack.push_async_callback(self.engine.dispose)
            tasks: list[asyncio.Task[None]] = [
                asyncio.create_task(task(), name=f"{self.service}-bg") for task in self._background
            ]
            tasks.append(asyncio.create_task(self.health.watch(self._on_stuck), name="watchdog"))
            self.health.started = True
            log.info("service started", consumers=[c.topic for c in self.consumers])
            stop_wait = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task in done and task.exception() is not None:
                    log.error("background task failed", error=repr(task.exception()))
                    self.exit_code = 1
                task.cancel()
            stop_wait.cancel()
            # let cancelled tasks finish their cleanup before the broker and the database close
            await asyncio.gather(*tasks, stop_wait, return_exceptions=True)
        if target is not None:
            target.unlink(missing_ok=True)
        log.info("service stopped", exit_code=self.exit_code)
        return self.exit_code
