"""Kafka building blocks: the broker factory, topic bootstrap and the reliable consumer.

faststream's own ack policies do not fit an at-least-once pipeline: `ACK` commits even when the handler
raises, and `NACK` seeks back at once so a poison message loops hot. Every subscriber here therefore
uses `AckPolicy.MANUAL` and `ReliableConsumer` decides, per message:

* success → commit that offset (asynchronously: the handler's output is already durable);
* `InvalidMessage` (or an object-store error no retry can fix: `storage.permanent_storage_failure`) →
  publish a `DeadLetter` to `<topic>.dlq` (acks=all) with origin headers, report it (`on_dead_letter`:
  the job fails), then commit; if either step raises, nothing is committed and the record is handled
  again like a transient failure (so it is never skipped);
* a transient failure (`classify.is_transient`: a server unreachable, restarting or overloaded) → back
  off (exponential, jitter) and seek back to re-read the same message; after `retry_max_attempts` the
  consumer turns fatal: it never commits again and asks its process to stop, so a restart resumes
  from the last committed offset;
* anything else (an error nobody classified: a codec library's `ValueError`, a `RuntimeError` from the
  GPU stack, a bug) → retried the same way, in case it was a fluke; after `retry_max_attempts` the
  record is dead-lettered with `E_INTERNAL` (the error in the reason and the log, a generic message
  for the job's user) and committed, so one such record cannot crash-loop the service and hold up
  every record behind it on its partition. A restart would read it again and fail the same way.

A DLQ circuit breaker turns the consumer fatal instead of dead-lettering when most recent messages were
invalid (a bad deploy must not drain a topic into its DLQ).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import structlog
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from faststream.confluent import KafkaBroker
from faststream.confluent import KafkaMessage as KafkaMessageParam
from faststream.confluent.message import KafkaMessage
from faststream.confluent.prometheus import KafkaPrometheusMiddleware
from faststream.middlewares import AckPolicy
from prometheus_client import REGISTRY

from infiniteflow_common import metrics
from infiniteflow_common.classify import UnexpectedFailure, describe, is_transient
from infiniteflow_common.errors import HandedBack, InfiniteFlowError, InvalidMessage
from infiniteflow_common.health import GroupMembership
from infiniteflow_common.observability import get_logger
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import permanent_storage_failure
from infiniteflow_common.topics import TopicSpec, dlq_of

if TYPE_CHECKING:
    from infiniteflow_common.avro import SchemaCatalog

log = get_logger()

# Commit errors that mean "this member no longer owns the partition", not "the broker is broken".
REBALANCE_ERRORS = {
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._STATE,
}

# Headers put on every dead letter so an operator can find the original without decoding the envelope.
H_ORIGIN_TOPIC = "x-origin-topic"
H_ORIGIN_PARTITION = "x-origin-partition"
H_ORIGIN_OFFSET = "x-origin-offset"
H_ERROR_CODE = "x-error-code"
H_ERROR_REASON = "x-error-reason"
H_SERVICE = "x-service"


def make_broker(settings: CommonSettings, service: str, **extra_config: Any) -> KafkaBroker:
    """A broker whose producer is idempotent with acks=all, named after the service.

    On stop it waits up to `shutdown_grace_s` for the message in hand (which may finish or hand back).
    """
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=service,
        graceful_timeout=settings.shutdown_grace_s,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        # faststream's records then go through our JSON log handler (observability.configure_logging)
        logger=logging.getLogger(f"faststream.{service}"),
        config=extra_config or None,  # type: ignore[arg-type]
        # faststream's broker metrics (faststream_received_*, faststream_published_*) beside ours
        middlewares=(KafkaPrometheusMiddleware(registry=REGISTRY, app_name=service),),
    )


# --- topic bootstrap ----------------------------------------------------------------------------------


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create every topic and its DLQ twin as the manifests say; grow partitions that are too few.

    Idempotent. Returns the names of topics it created or grew.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=timeout_s).topics
    wanted: dict[str, tuple[int, int]] = {}
    for spec in specs:
        wanted[spec.name] = (spec.partitions, spec.retention_hours)
        wanted[spec.dlq] = (1, spec.dlq_retention_hours)
    to_create = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            config={"retention.ms": str(hours * 3_600_000), "cleanup.policy": "delete"},
        )
        for name, (partitions, hours) in wanted.items()
        if name not in existing
    ]
    to_grow = [
        NewPartitions(name, partitions)
        for name, (partitions, _hours) in wanted.items()
        if name in existing and len(existing[name].partitions) < partitions
    ]
    changed: list[str] = []
    for futures in (
        admin.create_topics(to_create, operation_timeout=timeout_s) if to_create else {},
        admin.create_partitions(to_grow, operation_timeout=timeout_s) if to_grow else {},
    ):
        for name, future in futures.items():
            try:
                future.result()
                changed.append(name)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    return changed


# --- the reliable consumer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One Kafka record as a handler sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    timestamp_ms: int | None = None

    @property
    def where(self) -> str:
        """Where the record sits, in the form operators search for: `topic[partition]@offset`."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


Handler = Callable[[Delivery], Awaitable[None]]


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with equal jitter: uniform in [c/2, c] for c = min(cap, base·2^(attempt-1)).

    Half of each delay is fixed so the retries of one message add up to a known minimum (long enough
    to ride out a restart of the object store or database); the other half spreads consumers apart.
    """
    ceiling = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    return float(ceiling / 2 + (rng or random).uniform(0, ceiling / 2))


@dataclass
class DlqCircuitBreaker:
    """Trips when more than `max_invalid_ratio` of the last `window` messages were invalid."""

    max_invalid_ratio: float
    window: int
    min_messages: int
    _outcomes: deque[bool] = field(default_factory=deque)

    def record(self, invalid: bool) -> bool:
        """Record an outcome; True when the breaker is now open (the consumer must stop)."""
        self._outcomes.append(invalid)
        while len(self._outcomes) > self.window:
            self._outcomes.popleft()
        if len(self._outcomes) < self.min_messages:
            return False
        return sum(self._outcomes) / len(self._outcomes) > self.max_invalid_ratio


class ConsumerStopped(InfiniteFlowError):  # noqa: N818 - a state, not a failure of this message
    """The consumer gave up (retries exhausted or DLQ breaker open) and commits nothing more."""

    code = "E_CONSUMER_STOPPED"


class ReliableConsumer:
    """Runs one handler per message with the commit, retry and DLQ policy described in the module doc."""

    def __init__(
        self,
        *,
        broker: KafkaBroker,
        catalog: SchemaCatalog,
        service: str,
        topic: str,
        handler: Handler,
        settings: CommonSettings,
        on_fatal: Callable[[ConsumerStopped], None] | None = None,
        on_dead_letter: Callable[[Delivery, InvalidMessage], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.broker = broker
        self.catalog = catalog
        self.service = service
        self.topic = topic
        self.handler = handler
        self.settings = settings
        self.on_fatal = on_fatal
        self.on_dead_letter = on_dead_letter
        self.rng = rng or random.Random()
        self.breaker = DlqCircuitBreaker(
            settings.dlq_max_invalid_ratio, settings.dlq_breaker_window, settings.dlq_breaker_min_messages
        )
        self.fatal: ConsumerStopped | None = None
        # shared by every consumer of one group member; `subscribe` hands it to the rebalance callbacks
        self.processed = ProcessedOffsets()
        self._attempts: dict[tuple[int, int], int] = {}
        self._invalid: set[tuple[int, int]] = set()
        # records whose unexpected error outlasted its retries: how often it failed (see `_give_up`)
        self._given_up: dict[tuple[int, int], int] = {}

    async def __call__(self, message: KafkaMessage) -> None:
        """Process one raw faststream message (registered with `AckPolicy.MANUAL`)."""
        delivery = to_delivery(message)
        if self.fatal is not None:
            # Never commit past a message we could not process; wait for the process to stop.
            await message.nack()
            await asyncio.sleep(1.0)
            return
        started = time.perf_counter()
        # Every log line written while handling this record carries its job, chunk and stage, so one
        # job's story can be followed by grepping its id across services.
        context: dict[str, Any] = {"stage": self.service, "where": delivery.where}
        if job_id := job_id_from_key(delivery.key):
            context["job_id"] = job_id
            chunk = (delivery.key or b"").decode(errors="replace").partition("/")[2]
            if chunk.isdigit():
                context["chunk_index"] = int(chunk)
        with structlog.contextvars.bound_contextvars(**context):
            try:
                await self.handler(delivery)
            except InvalidMessage as exc:
                await self._dead_letter(message, delivery, exc)
            except HandedBack as exc:
                # stopping: no commit and no retry here; whoever owns the partition next re-reads it
                await message.nack()
                metrics.MESSAGES_CONSUMED.labels(self.service, self.topic, "handed_back").inc()
                log.info("work handed back", where=delivery.where, reason=exc.message)
            except asyncio.CancelledError:
                # the broker stopped mid-record: nothing was committed, so the record is handed back too
                metrics.MESSAGES_CONSUMED.labels(self.service, self.topic, "handed_back").inc()
                log.info(
                    "work handed back", where=delivery.where, reason="stopping: the handler was cut short"
                )
                raise
            except Exception as exc:
                if (gone := permanent_storage_failure(exc)) is not None:
                    # An object the record needs is gone, forbidden or replaced: retrying would loop
                    # forever, so the record is dead-lettered and its job fails with the error's code.
                    await self._dead_letter(message, delivery, InvalidMessage(gone.message, code=gone.code))
                elif is_transient(exc):  # the outside world: retry, then stop so a restart resumes
                    await self._retry_or_stop(message, delivery, exc)
                else:  # nobody classified it: retry, then fail the job rather than the whole service
                    await self._retry_or_give_up(message, delivery, exc)
            else:
                await commit(message, self.processed)
                self._attempts.pop((delivery.partition, delivery.offset), None)
                self._given_up.pop((delivery.partition, delivery.offset), None)
                self.breaker.record(invalid=False)
                metrics.MESSAGES_CONSUMED.labels(self.service, self.topic, "ok").inc()
            finally:
                metrics.HANDLER_SECONDS.labels(self.service, self.topic).observe(
                    time.perf_counter() - started
                )

    async def _dead_letter(self, message: KafkaMessage, delivery: Delivery, exc: InvalidMessage) -> None:
        position = (delivery.partition, delivery.offset)
        # an unexpected error's own text goes to operators (the DLQ, the log), never to the job's user
        reason = exc.detail if isinstance(exc, UnexpectedFailure) else exc.message
        # A record counts once towards the breaker, however often its dead-lettering is retried.
        if position not in self._invalid:
            self._invalid.add(position)
            if self.breaker.record(invalid=True):
                metrics.DLQ_BREAKER_TRIPS.labels(self.service, self.topic).inc()
                await message.nack()
                self._stop(
                    ConsumerStopped(
                        f"more than {self.settings.dlq_max_invalid_ratio:.0%} of the last "
                        f"{self.settings.dlq_breaker_window} messages on {self.topic} were invalid "
                        f"(latest at {delivery.where}: {exc}); refusing to drain the topic into its DLQ"
                    )
                )
                return
        try:
            await publish_dead_letter(
                self.broker,
                self.catalog,
                delivery,
                service=self.service,
                code=exc.code,
                reason=reason,
                attempts=self._given_up.get(position) or self._attempts.get(position, 0) + 1,
            )
            if self.on_dead_letter is not None:
                # e.g. fail the message's job, so its user hears about it instead of waiting forever
                await self.on_dead_letter(delivery, exc)
        except Exception as failure:
            # The record is not safely in the DLQ, or its job was not told: committing now would lose
            # it (the next record's commit skips past it). Handle it again after a backoff — the
            # handler fails the same way and the dead-lettering is retried — or stop without committing.
            log.warning("dead-lettering failed", where=delivery.where, code=exc.code, error=repr(failure))
            await self._retry_or_stop(message, delivery, failure)
            return
        self._attempts.pop(position, None)
        self._invalid.discard(position)
        self._given_up.pop(position, None)
        await commit(message, self.processed)
        metrics.MESSAGES_CONSUMED.labels(self.service, self.topic, "dlq").inc()
        log.warning(
            "message dead-lettered",
            where=delivery.where,
            code=exc.code,
            reason=reason,
            dlq=dlq_of(delivery.topic),
        )

    async def _retry_or_stop(
        self, message: KafkaMessage, delivery: Delivery, exc: Exception, *, unexpected: bool = False
    ) -> None:
        position = (delivery.partition, delivery.offset)
        attempts = self._attempts.get(position, 0) + 1
        self._attempts[position] = attempts
        code = exc.code if isinstance(exc, InfiniteFlowError) else type(exc).__name__
        if attempts >= self.settings.retry_max_attempts:
            await message.nack()
            self._stop(
                ConsumerStopped(
                    f"handling {delivery.where} failed {attempts} times, last with {code}: {exc}; "
                    "stopping without committing so a restart resumes here"
                )
            )
            return
        delay = backoff_delay(
            attempts, self.settings.retry_base_delay_s, self.settings.retry_max_delay_s, self.rng
        )
        metrics.MESSAGES_CONSUMED.labels(self.service, self.topic, "retried").inc()
        log.warning(
            "unexpected failure, retrying" if unexpected else "transient failure, retrying",
            where=delivery.where,
            attempt=attempts,
            max_attempts=self.settings.retry_max_attempts,
            code=code,
            error=describe(exc) if unexpected else str(exc),
            retry_in_s=round(delay, 3),
        )
        await asyncio.sleep(delay)
        await message.nack()  # seek back: the same record is read again

    async def _retry_or_give_up(self, message: KafkaMessage, delivery: Delivery, exc: Exception) -> None:
        """An unclassified error: retried like a transient one, then dead-lettered with `E_INTERNAL`.

        Once given up, the record is not retried again: if its dead-lettering fails (the DLQ or the
        database unreachable), that is retried with the transient budget, from the first attempt.
        An `InfiniteFlowError` that is neither invalid nor transient keeps its own code and message.
        """
        position = (delivery.partition, delivery.offset)
        attempts = self._attempts.get(position, 0) + 1
        if position not in self._given_up:
            if attempts < self.settings.retry_max_attempts:
                await self._retry_or_stop(message, delivery, exc, unexpected=True)
                return
            self._given_up[position] = attempts
            self._attempts.pop(position, None)
        verdict: InvalidMessage
        if isinstance(exc, InfiniteFlowError) and exc.code != UnexpectedFailure.code:
            verdict = InvalidMessage(exc.message, code=exc.code)
        else:
            verdict = UnexpectedFailure(exc, attempts=self._given_up[position])
        log.error(
            "unexpected error outlasted its retries; the record's job fails",
            where=delivery.where,
            attempts=self._given_up[position],
            code=verdict.code,
            error_type=type(exc).__qualname__,
            error=describe(exc),
            exc_info=exc,
        )
        await self._dead_letter(message, delivery, verdict)

    def _stop(self, reason: ConsumerStopped) -> None:
        self.fatal = reason
        log.error("consumer stopped", topic=self.topic, reason=reason.message)
        if self.on_fatal is not None:
            self.on_fatal(reason)


def to_delivery(message: KafkaMessage) -> Delivery:
    """The handler's view of a faststream Kafka message."""
    raw = message.raw_message
    record = raw[0] if isinstance(raw, tuple) else raw
    headers = {
        k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
        for k, v in (record.headers() or [])
    }
    ts_type, ts = record.timestamp()
    key = record.key()
    return Delivery(
        topic=str(record.topic()),
        partition=int(record.partition() or 0),
        offset=int(record.offset() or 0),
        key=key if isinstance(key, bytes) or key is None else str(key).encode(),
        value=bytes(record.value() or b""),
        headers=headers,
        timestamp_ms=ts if ts_type else None,
    )


class ProcessedOffsets:
    """The next offset to read on each partition this group member has finished records of.

    A commit is fire-and-forget (see `commit`), and we saw one lost: a worker committed a record while
    the group was rebalancing around a killed member, kept the partition (cooperative-sticky), and no
    later record came to commit past it, so the record stayed uncommitted for good. After every
    rebalance the member therefore commits again what it has processed on the partitions it still owns;
    partitions it gives up are forgotten first, so it never commits over a new owner's progress.
    Fed from the event loop; the rebalance callbacks run on the consumer's polling thread.
    """

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def record(self, topic: str, partition: int, next_offset: int) -> None:
        """`next_offset` is where a reader of this partition resumes after our finished records."""
        with self._lock:
            key = (topic, partition)
            self._next[key] = max(next_offset, self._next.get(key, next_offset))

    def forget(self, partitions: Iterable[Any]) -> None:
        """These partitions left this member (revoked or lost): their offsets are someone else's now."""
        with self._lock:
            for p in partitions:
                self._next.pop((p.topic, p.partition), None)

    def commit_again(self, client: Any) -> None:
        """Commit, asynchronously, what this member processed on the partitions it still owns."""
        with self._lock:
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self._next.items())]
        if not offsets:
            return
        try:
            send_commit(client, offsets)
        except (KafkaException, RuntimeError) as exc:  # nothing to commit, the client closing, …
            log.info("offsets not committed again after the rebalance", error=str(exc))
            return
        log.info(
            "processed offsets committed again after a rebalance",
            offsets=[f"{o.topic}[{o.partition}]@{o.offset}" for o in offsets],
        )


def send_commit(client: Any, offsets: list[TopicPartition]) -> None:
    """Ask librdkafka to commit `offsets` (next offsets to read) without waiting for the answer."""
    client.commit(offsets=offsets, asynchronous=True)


async def commit(message: KafkaMessage, processed: ProcessedOffsets | None = None) -> None:
    """Commit the offset after this message, without waiting for the broker's answer.

    Never a synchronous commit: librdkafka waits for its result without a timeout, and one issued
    while the broker restarted never returned — the consumer's only thread stayed blocked, so the
    service stopped consuming for good. The handler's output is already durable and every handler is
    idempotent, so a commit that fails (the broker gone, the partition moved) only means the record is
    read once more; one the broker refused while the partition stayed here is made again after the
    rebalance (`ProcessedOffsets`).
    """
    raw = message.raw_message
    record = raw[0] if isinstance(raw, tuple) else raw
    client = message.consumer.consumer  # type: ignore[attr-defined]  # the confluent Consumer
    topic, partition, offset = str(record.topic()), int(record.partition() or 0), int(record.offset() or 0)
    try:
        send_commit(client, [TopicPartition(topic, partition, offset + 1)])
    except KafkaException as exc:
        code = exc.args[0].code() if exc.args and hasattr(exc.args[0], "code") else None
        if code == KafkaError._NO_OFFSET:
            return
        if code not in REBALANCE_ERRORS:
            raise
        # The partition moved to another member while we worked (we were too slow or stopped). Its new
        # owner re-reads this record; the handlers' idempotency makes that harmless.
        log.warning("commit lost to a rebalance", error=str(exc))
    else:
        if processed is not None:
            processed.record(topic, partition, offset + 1)
    message.committed = message.committed or True  # type: ignore[assignment]


async def publish_dead_letter(
    broker: KafkaBroker,
    catalog: SchemaCatalog,
    delivery: Delivery,
    *,
    service: str,
    code: str,
    reason: str,
    attempts: int,
    job_id: str | None = None,
) -> None:
    """Publish the `DeadLetter` envelope of `delivery` to its topic's DLQ and wait for acks=all."""
    envelope = {
        "origin_topic": delivery.topic,
        "origin_partition": delivery.partition,
        "origin_offset": delivery.offset,
        "origin_timestamp": (
            datetime.fromtimestamp(delivery.timestamp_ms / 1000, UTC) if delivery.timestamp_ms else None
        ),
        "key": delivery.key,
        "payload": delivery.value,
        "headers": delivery.headers,
        "error_code": code,
        "reason": reason,
        "service": service,
        "attempts": attempts,
        "failed_at": datetime.now(UTC),
        "job_id": job_id or job_id_from_key(delivery.key),
    }
    headers = {
        H_ORIGIN_TOPIC: delivery.topic,
        H_ORIGIN_PARTITION: str(delivery.partition),
        H_ORIGIN_OFFSET: str(delivery.offset),
        H_ERROR_CODE: code,
        H_ERROR_REASON: reason[:1000],
        H_SERVICE: service,
    }
    await broker.publish(
        catalog.encode("DeadLetter", envelope),
        topic=dlq_of(delivery.topic),
        key=delivery.key,
        headers=headers,
    )
    metrics.DLQ_MESSAGES.labels(service, delivery.topic, code).inc()


def job_id_from_key(key: bytes | None) -> str | None:
    """The job a pipeline record belongs to, from its key (job_id, or job_id/chunk_index); else None."""
    try:
        return str(uuid.UUID(key.decode().split("/", 1)[0])) if key else None
    except (ValueError, UnicodeDecodeError):
        return None


def subscribe(
    broker: KafkaBroker,
    *consumers: ReliableConsumer,
    group_id: str,
    max_poll_interval_ms: int = 300_000,
    auto_offset_reset: Literal["earliest", "latest"] = "earliest",
    membership: GroupMembership | None = None,
    group_instance_id: str | None = None,
) -> None:
    """Register the consumers as ONE Kafka consumer of their topics in `group_id`, with manual commits.

    One group member per process, whatever the number of topics: a service that listens to two
    topics through two members in one group rejoins as two after every broker hiccup, and we saw such a
    pair stay unassigned after a broker restart. Records are dispatched to their topic's consumer.

    Rebalancing is cooperative-sticky: when a worker joins or leaves, only the partitions that move
    are revoked, so the others keep working through a scale-up or scale-down. `membership` follows
    the assignment (for liveness); after each rebalance the member commits again what it processed
    on the partitions it kept (`ProcessedOffsets`); `group_instance_id` turns on static membership.
    """
    by_topic = {consumer.topic: consumer for consumer in consumers}
    processed = ProcessedOffsets()
    for consumer in consumers:
        consumer.processed = processed

    def on_assign(client: Any, partitions: list[Any]) -> None:
        if membership is not None:
            membership.on_assign(client, partitions)
        processed.commit_again(client)

    def on_revoke(client: Any, partitions: list[Any]) -> None:
        processed.forget(partitions)
        if membership is not None:
            membership.on_revoke(client, partitions)

    def on_lost(client: Any, partitions: list[Any]) -> None:
        processed.forget(partitions)
        if membership is not None:
            membership.on_lost(client, partitions)

    async def on_message(message: KafkaMessageParam) -> None:
        raw = message.raw_message
        record = raw[0] if isinstance(raw, tuple) else raw
        await by_topic[str(record.topic())](message)

    broker.subscriber(
        *by_topic,
        group_id=group_id,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset=auto_offset_reset,
        max_poll_interval_ms=max_poll_interval_ms,
        partition_assignment_strategy=("cooperative-sticky",),
        group_instance_id=group_instance_id or None,
        on_assign=on_assign,
        on_revoke=on_revoke,
        on_lost=on_lost,
    )(on_message)
