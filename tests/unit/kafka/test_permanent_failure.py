"""The consumer is told which failures are permanent; it dead-letters those at once and retries the rest."""

from __future__ import annotations

from typing import Any

from infiniteflow_common.errors import InfiniteFlowError
from infiniteflow_common.kafka import H_ERROR_CODE, Delivery, ReliableConsumer
from tests.unit.kafka.fakes import Broker, Member, Reported, message, reliable_consumer

TOPIC = "test.permanent"


class GoneError(Exception):
    """What a handler's storage client raises for an object that is no longer there."""


class ResetError(OSError):
    """A connection reset: transient by `classify.is_transient`."""


def gone_is_permanent(exc: BaseException) -> InfiniteFlowError | None:
    """The decision a composition root hands the consumer: `GoneError` fails the job with E_SOURCE_GONE."""
    if isinstance(exc, GoneError):
        return InfiniteFlowError("the source no longer exists; upload the video again", code="E_SOURCE_GONE")
    return None


def consumer(handler: Any, broker: Broker, reported: Reported) -> ReliableConsumer:
    """Retries 3 times; `GoneError` is permanent."""
    return reliable_consumer(
        handler, broker, reported, topic=TOPIC, permanent_failure=gone_is_permanent, retry_max_attempts=3
    )


async def test_a_failure_the_decision_calls_permanent_is_dead_lettered_at_once_and_committed() -> None:
    calls: list[int] = []

    async def handle(delivery: Delivery) -> None:
        calls.append(delivery.offset)
        raise GoneError("NoSuchKey")

    broker, member, reported = Broker(), Member(), Reported()
    record = message(TOPIC, 7, b"payload", member)
    await consumer(handle, broker, reported)(record)

    assert calls == [7], "a permanent failure is not retried"
    assert record.nacks == 0
    [(dlq, _value, headers)] = broker.published
    assert (dlq, headers[H_ERROR_CODE]) == (f"{TOPIC}.dlq", "E_SOURCE_GONE")
    assert [(d.offset, e.code) for d, e in reported] == [(7, "E_SOURCE_GONE")]
    assert member.consumer.committed == [8], "committed past the dead-lettered record"


async def test_a_failure_the_decision_does_not_call_permanent_is_retried_not_dead_lettered() -> None:
    async def handle(delivery: Delivery) -> None:
        raise ResetError("connection reset by peer")

    broker, member, reported = Broker(), Member(), Reported()
    record = message(TOPIC, 7, b"payload", member)
    reader = consumer(handle, broker, reported)
    await reader(record)

    assert record.nacks == 1, "sought back: the same record is read again"
    assert broker.published == []
    assert reported == []
    assert member.consumer.committed == []
    assert reader.fatal is None


async def test_the_same_error_type_is_permanent_only_when_the_decision_says_so() -> None:
    # Without the decision the consumer itself knows nothing of storage: `GoneError` is unclassified, so
    # it is retried (here until the budget of 3 runs out, then dead-lettered as E_INTERNAL).
    calls: list[int] = []

    async def handle(delivery: Delivery) -> None:
        calls.append(delivery.offset)
        raise GoneError("NoSuchKey")

    broker, member, reported = Broker(), Member(), Reported()
    reader = consumer(handle, broker, reported)
    reader.permanent_failure = lambda exc: None
    record = message(TOPIC, 7, b"payload", member)
    for _ in range(3):
        await reader(record)

    assert calls == [7, 7, 7]
    assert record.nacks == 2
    assert [e.code for _d, e in reported] == ["E_INTERNAL"]
