"""The reliable consumer: per message, commit after durable work, retry, or dead-letter.

faststream's own ack policies do not fit an at-least-once pipeline: `ACK` commits even when the handler
raises, and `NACK` seeks back at once so a poison message loops hot. Every subscriber here therefore
uses `AckPolicy.MANUAL` and `ReliableConsumer` decides, per message:

* success → commit that offset (asynchronously: the handler's output is already durable);
* `InvalidMessage` (or an error its composition root calls permanent: `PermanentFailure`, e.g. an
  object gone from the store) → publish a `DeadLetter` to `<topic>.dlq` (acks=all) with origin
  headers, report it (`on_dead_letter`: the job fails), then commit; if either step raises, nothing
  is committed and the record is handled again like a transient failure (so it is never skipped);
* a transient failure (`classify.is_transient`: a server unreachable, restarting or overloaded) → back
  off (exponential, jitter) and seek back to re-read the same message; after `retry_max_attempts` the
  consumer turns fatal: it never commits again and asks its process to stop, so a restart resumes
  from the last committed offset;
* anything else (an error nobody classified: a codec library's `ValueError`, a `RuntimeError` from the
  GPU stack, a bug) → retried the same way, in case it was a fluke; after `retry_max_attempts` the
  record is dead-lettered with `E_INTERNAL` (the error in the reason and the log, a generic message
  for the job's user) and committed, so one such record cannot crash-loop the service and hold up
  every record behind it on its partition. A restart would read it again and fail the same way.
  An error wrapped in `JobScopedError` is judged as the error itself; the job it names (a worker's
  claimed chunk may be another job's) is the one the dead letter and `on_dead_letter` fail.

A DLQ circuit breaker turns the consumer fatal instead of dead-lettering when most recent messages were
invalid (a bad deploy must not drain a topic into its DLQ).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from faststream.confluent import KafkaBroker
from faststream.confluent.message import KafkaMessage

from infiniteflow_common import metrics
from infiniteflow_common.classify import UnexpectedFailure, describe, is_transient
from infiniteflow_common.errors import HandedBack, InfiniteFlowError, InvalidMessage, JobScopedError
from infiniteflow_common.kafka.delivery import Delivery, Handler, job_id_from_key, to_delivery
from infiniteflow_common.kafka.dlq import DlqCircuitBreaker, publish_dead_letter
from infiniteflow_common.kafka.errors import ConsumerStopped, PermanentFailure
from infiniteflow_common.kafka.offsets import ProcessedOffsets, commit
from infiniteflow_common.kafka.retry import backoff_delay
from infiniteflow_common.observability import get_logger
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.topics import dlq_of

if TYPE_CHECKING:
    from infiniteflow_common.avro import SchemaCatalog

log = get_logger()

Position = tuple[int, int]  # (partition, offset) of a record this consumer reads


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
        permanent_failure: PermanentFailure,
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
        self.permanent_failure = permanent_failure
        self.on_fatal = on_fatal
        self.on_dead_letter = on_dead_letter
        self.rng = rng or random.Random()
        self.breaker = DlqCircuitBreaker(
            settings.dlq_max_invalid_ratio, settings.dlq_breaker_window, settings.dlq_breaker_min_messages
        )
        self.fatal: ConsumerStopped | None = None
        # shared by every consumer of one group member; `subscribe` hands it to the rebalance callbacks
        self.processed = ProcessedOffsets()
        self._attempts: dict[Position, int] = {}
        self._invalid: set[Position] = set()
        # records whose unexpected error outlasted its retries: how often it failed (see `_give_up`)
        self._given_up: dict[Position, int] = {}

    async def __call__(self, message: KafkaMessage) -> None:
        """Process one raw faststream message (registered with `AckPolicy.MANUAL`)."""
        delivery = to_delivery(message)
        if self.fatal is not None:
            # Never commit past a message we could not process; wait for the process to stop.
            await message.nack()
            await asyncio.sleep(1.0)
            return
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(**log_context(self.service, delivery)):
            try:
                await self.handler(delivery)
            except InvalidMessage as exc:
                await self._dead_letter(message, delivery, exc)
            except HandedBack as exc:
                # stopping: no commit and no retry here; whoever owns the partition next re-reads it
                await message.nack()
                self._handed_back(delivery, exc.message)
            except asyncio.CancelledError:
                # the broker stopped mid-record: nothing was committed, so the record is handed back too
                self._handed_back(delivery, "stopping: the handler was cut short")
                raise
            except Exception as exc:
                await self._failed(message, delivery, exc)
            else:
                await self._succeeded(message, delivery)
            finally:
                metrics.HANDLER_SECONDS.labels(self.service, self.topic).observe(
                    time.perf_counter() - started
                )

    async def _succeeded(self, message: KafkaMessage, delivery: Delivery) -> None:
        await commit(message, self.processed)
        self._attempts.pop((delivery.partition, delivery.offset), None)
        self._given_up.pop((delivery.partition, delivery.offset), None)
        self.breaker.record(invalid=False)
        metrics.MESSAGES_CONSUMED.labels(self.service, self.topic, "ok").inc()

    def _handed_back(self, delivery: Delivery, reason: str) -> None:
        metrics.MESSAGES_CONSUMED.labels(self.service, self.topic, "handed_back").inc()
        log.info("work handed back", where=delivery.where, reason=reason)

    async def _failed(self, message: KafkaMessage, delivery: Delivery, exc: Exception) -> None:
        """The handler raised something other than `InvalidMessage`: dead-letter, retry, or give up.

        A `JobScopedError` is judged by the error it wraps; the job it names is the one that fails.
        """
        exc, job_id = JobScopedError.unwrap(exc)
        if (gone := self.permanent_failure(exc)) is not None:
            # e.g. an object the record needs is gone, forbidden or replaced: retrying would loop
            # forever, so the record is dead-lettered and its job fails with the error's code.
            verdict = InvalidMessage(gone.message, code=gone.code)
            verdict.job_id = job_id
            await self._dead_letter(message, delivery, verdict)
        elif is_transient(exc):  # the outside world: retry, then stop so a restart resumes
            await self._retry_or_stop(message, delivery, exc)
        else:  # nobody classified it: retry, then fail the job rather than the whole service
            await self._retry_or_give_up(message, delivery, exc, job_id=job_id)

    def _forget(self, delivery: Delivery) -> None:
        """The record is dead-lettered: drop what was counted about it."""
        position = (delivery.partition, delivery.offset)
        self._attempts.pop(position, None)
        self._invalid.discard(position)
        self._given_up.pop(position, None)

    async def _dead_letter(self, message: KafkaMessage, delivery: Delivery, exc: InvalidMessage) -> None:
        if await self._breaker_tripped(message, delivery, exc):
            return
        position = (delivery.partition, delivery.offset)
        # an unexpected error's own text goes to operators (the DLQ, the log), never to the job's user
        reason = exc.detail if isinstance(exc, UnexpectedFailure) else exc.message
        try:
            await publish_dead_letter(
                self.broker,
                self.catalog,
                delivery,
                service=self.service,
                code=exc.code,
                reason=reason,
                attempts=self._given_up.get(position) or self._attempts.get(position, 0) + 1,
                job_id=exc.job_id,
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
        self._forget(delivery)
        await commit(message, self.processed)
        metrics.MESSAGES_CONSUMED.labels(self.service, self.topic, "dlq").inc()
        log.warning(
            "message dead-lettered",
            where=delivery.where,
            code=exc.code,
            reason=reason,
            dlq=dlq_of(delivery.topic),
        )

    async def _breaker_tripped(self, message: KafkaMessage, delivery: Delivery, exc: InvalidMessage) -> bool:
        """Count the record as invalid (once, however often its dead-lettering is retried); True: stopped."""
        position = (delivery.partition, delivery.offset)
        if position in self._invalid:
            return False
        self._invalid.add(position)
        if not self.breaker.record(invalid=True):
            return False
        metrics.DLQ_BREAKER_TRIPS.labels(self.service, self.topic).inc()
        await message.nack()
        self._stop(
            ConsumerStopped(
                f"more than {self.settings.dlq_max_invalid_ratio:.0%} of the last "
                f"{self.settings.dlq_breaker_window} messages on {self.topic} were invalid "
                f"(latest at {delivery.where}: {exc}); refusing to drain the topic into its DLQ"
            )
        )
        return True

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

    async def _retry_or_give_up(
        self, message: KafkaMessage, delivery: Delivery, exc: Exception, *, job_id: str | None = None
    ) -> None:
        """An unclassified error: retried like a transient one, then dead-lettered with `E_INTERNAL`.

        `job_id` fails instead of the record's job (the error was raised working for it).

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
        verdict = given_up(exc, attempts=self._given_up[position])
        verdict.job_id = job_id
        log.error(
            "unexpected error outlasted its retries; the record's job fails",
            where=delivery.where,
            **({"failing_job_id": job_id} if job_id else {}),
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


def given_up(exc: Exception, *, attempts: int) -> InvalidMessage:
    """What a record whose error outlasted its retries is dead-lettered as.

    An `InfiniteFlowError` keeps its own code and message; anything else is `E_INTERNAL`, its text
    kept for operators (`UnexpectedFailure`).
    """
    if isinstance(exc, InfiniteFlowError) and exc.code != UnexpectedFailure.code:
        return InvalidMessage(exc.message, code=exc.code)
    return UnexpectedFailure(exc, attempts=attempts)


def log_context(service: str, delivery: Delivery) -> dict[str, Any]:
    """What every log line written while handling `delivery` carries: its stage, place, job and chunk.

    One job's story can then be followed by grepping its id across services.
    """
    context: dict[str, Any] = {"stage": service, "where": delivery.where}
    if job_id := job_id_from_key(delivery.key):
        context["job_id"] = job_id
        chunk = (delivery.key or b"").decode(errors="replace").partition("/")[2]
        if chunk.isdigit():
            context["chunk_index"] = int(chunk)
    return context
