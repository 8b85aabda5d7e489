"""The consumer contract every service relies on, checked on the real Kafka broker."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.errors import InvalidMessage, TransientError
from infiniteflow_common.kafka import H_ERROR_CODE, H_ORIGIN_OFFSET, H_ORIGIN_TOPIC, Delivery
from infiniteflow_common.kafka import offsets as kafka
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.topics import dlq_of
from tests.contract.support import all_versions, example_payload
from tests.integration.kafka_support import (
    committed_offset,
    private_topic,
    produce,
    read_all,
    running_consumer,
)
from tests.support.waiting import eventually

pytestmark = [pytest.mark.kafka]


@pytest.fixture
def fast_retries(settings: CommonSettings) -> CommonSettings:
    return settings.model_copy(
        update={"retry_base_delay_s": 0.05, "retry_max_delay_s": 0.2, "retry_max_attempts": 4}
    )


async def test_every_schema_round_trips_through_the_broker(settings: CommonSettings, unique: str) -> None:
    catalog = SchemaCatalog.load()
    versions = all_versions(catalog)
    assert versions, "no schema versions found"
    payloads = [(v.record, example_payload(catalog, v)) for v in versions]
    with private_topic(settings, f"test.roundtrip.{unique}") as topic:
        produce(settings, topic, [p for _, p in payloads])
        received = read_all(settings, topic, len(payloads))
    assert [m.value() for m in received] == [p for _, p in payloads]
    for (record, payload), message in zip(payloads, received, strict=True):
        assert catalog.decode(message.value(), record) == catalog.decode(payload, record)


async def test_unknown_writer_schema_goes_to_the_dlq_and_the_consumer_keeps_going(
    settings: CommonSettings, unique: str
) -> None:
    catalog = SchemaCatalog.load()
    seen: list[str] = []

    async def handle(delivery: Delivery) -> None:
        _record, datum = catalog.decode(delivery.value)
        seen.append(datum["job_id"])

    good = example_payload(catalog, catalog.latest("JobFailed"))
    unknown = b"\xc3\x01" + bytes(8) + good[10:]  # a fingerprint no schema has
    with private_topic(settings, f"test.unknown.{unique}") as topic:
        produce(settings, topic, [unknown, good])
        async with running_consumer(settings, topic, handle, group=f"g-{unique}"):
            await eventually(lambda: len(seen) == 1, what="the good message after the unknown one")
            await eventually(
                lambda: committed_offset(settings, topic, f"g-{unique}") == 2, what="commit past both"
            )
        [dead] = read_all(settings, dlq_of(topic), 1)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert headers[H_ORIGIN_TOPIC] == topic
    assert headers[H_ORIGIN_OFFSET] == "0"
    assert headers[H_ERROR_CODE] == "E_UNKNOWN_SCHEMA"
    _, envelope = catalog.decode(dead.value(), "DeadLetter")
    assert envelope["payload"] == unknown
    assert "0000000000000000" in envelope["reason"]


async def test_a_permanent_failure_is_dead_lettered_and_committed_past(
    settings: CommonSettings, unique: str
) -> None:
    handled: list[bytes] = []

    async def handle(delivery: Delivery) -> None:
        if delivery.value == b"poison":
            raise InvalidMessage("this record can never be processed", code="E_TEST_POISON")
        handled.append(delivery.value)

    with private_topic(settings, f"test.poison.{unique}") as topic:
        produce(settings, topic, [b"one", b"poison", b"two"])
        async with running_consumer(settings, topic, handle, group=f"g-{unique}"):
            await eventually(lambda: handled == [b"one", b"two"], what="both good messages")
            await eventually(
                lambda: committed_offset(settings, topic, f"g-{unique}") == 3, what="commit past poison"
            )
        [dead] = read_all(settings, dlq_of(topic), 1)
    assert dict(dead.headers())[H_ERROR_CODE] == b"E_TEST_POISON"


async def test_a_transient_failure_is_retried_with_backoff_and_then_succeeds(
    fast_retries: CommonSettings, unique: str
) -> None:
    attempts: list[float] = []

    async def handle(delivery: Delivery) -> None:
        import time

        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise TransientError("object store unavailable")

    with private_topic(fast_retries, f"test.transient.{unique}") as topic:
        produce(fast_retries, topic, [b"work"])
        async with running_consumer(fast_retries, topic, handle, group=f"g-{unique}") as consumer:
            await eventually(lambda: committed_offset(fast_retries, topic, f"g-{unique}") == 1, what="commit")
            assert consumer.fatal is None
        assert read_all(fast_retries, dlq_of(topic), 1, timeout_s=2) == []
    assert len(attempts) == 3, "the same message is re-read until it succeeds"


async def test_a_commit_the_broker_lost_during_a_rebalance_is_made_again_when_the_rebalance_ends(
    settings: CommonSettings, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the soak: a worker's commit, sent while the group rebalanced around a killed member,
    # never landed; the worker kept the partition and no later record came to commit past it. Here
    # the member's first commit request is dropped, as the broker dropped that one.
    requests: list[Any] = []
    send = kafka.send_commit

    def lose_the_first(client: Any, offsets: Any) -> None:
        requests.append(offsets)
        if len(requests) > 1:
            send(client, offsets)

    monkeypatch.setattr(kafka, "send_commit", lose_the_first)
    handled: list[tuple[str, int]] = []

    async def first(delivery: Delivery) -> None:
        handled.append(("first member", delivery.offset))

    async def second(delivery: Delivery) -> None:
        handled.append(("second member", delivery.offset))

    group = f"g-{unique}"
    with private_topic(settings, f"test.lostcommit.{unique}") as topic:
        produce(settings, topic, [b"work"])
        async with running_consumer(settings, topic, first, group=group):
            await eventually(lambda: handled == [("first member", 0)], what="the record handled")
            await asyncio.sleep(3)
            assert committed_offset(settings, topic, group) < 0, "the first commit was lost"
            # A second member joins: the group rebalances and the first keeps its only partition.
            async with running_consumer(settings, topic, second, group=group):
                await eventually(
                    lambda: committed_offset(settings, topic, group) == 1,
                    what="the processed record committed again after the rebalance",
                )
    assert handled == [("first member", 0)], "handled once, by the member that kept the partition"


async def test_retries_exhausted_stop_the_consumer_without_committing(
    fast_retries: CommonSettings, unique: str
) -> None:
    calls: list[bytes] = []

    async def handle(delivery: Delivery) -> None:
        calls.append(delivery.value)
        raise TransientError("database down")

    with private_topic(fast_retries, f"test.exhausted.{unique}") as topic:
        produce(fast_retries, topic, [b"a", b"b"])
        async with running_consumer(fast_retries, topic, handle, group=f"g-{unique}") as consumer:
            await eventually(lambda: consumer.fatal is not None, what="the consumer to give up")
        assert committed_offset(fast_retries, topic, f"g-{unique}") < 0, "nothing may be committed"
    assert calls == [b"a"] * fast_retries.retry_max_attempts


async def test_dlq_circuit_breaker_stops_a_consumer_that_would_dead_letter_most_messages(
    settings: CommonSettings, unique: str
) -> None:
    tight = settings.model_copy(
        update={"dlq_breaker_window": 6, "dlq_breaker_min_messages": 4, "dlq_max_invalid_ratio": 0.5}
    )

    async def handle(delivery: Delivery) -> None:
        raise InvalidMessage("bad deploy rejects everything", code="E_TEST_BAD_DEPLOY")

    with private_topic(tight, f"test.breaker.{unique}") as topic:
        produce(tight, topic, [f"m{i}".encode() for i in range(10)])
        async with running_consumer(tight, topic, handle, group=f"g-{unique}") as consumer:
            await eventually(lambda: consumer.fatal is not None, what="the breaker to open")
        dead = read_all(tight, dlq_of(topic), 10, timeout_s=3)
        committed = committed_offset(tight, topic, f"g-{unique}")
    # The breaker opens on the message that tips the ratio: earlier ones were dead-lettered, that one not.
    assert 1 <= len(dead) < 10
    assert committed == len(dead)


async def test_a_failed_job_report_is_retried_and_the_record_is_not_committed_past_until_it_succeeds(
    fast_retries: CommonSettings, unique: str
) -> None:
    handled: list[bytes] = []
    reports: list[str] = []

    async def handle(delivery: Delivery) -> None:
        if delivery.value == b"poison":
            raise InvalidMessage("this record can never be processed", code="E_TEST_POISON")
        handled.append(delivery.value)

    async def report(delivery: Delivery, error: InvalidMessage) -> None:
        reports.append(delivery.where)
        if len(reports) < 3:
            raise ConnectionError("database down while failing the job")

    with private_topic(fast_retries, f"test.report.{unique}") as topic:
        produce(fast_retries, topic, [b"one", b"poison", b"two"])
        group = f"g-{unique}"
        async with running_consumer(
            fast_retries, topic, handle, group=group, on_dead_letter=report
        ) as consumer:
            await eventually(
                lambda: committed_offset(fast_retries, topic, group) == 3, what="commit past all"
            )
            assert consumer.fatal is None
        dead = read_all(fast_retries, dlq_of(topic), 3, timeout_s=3)
    assert reports == [f"{topic}[0]@1"] * 3, "the job failure is reported again until it succeeds"
    assert handled == [b"one", b"two"]
    # at least once: each try of the dead-lettering published before the report failed
    assert [dict(m.headers())[H_ORIGIN_OFFSET] for m in dead] == [b"1"] * 3


class DlqDown(SchemaCatalog):
    """A catalog that cannot encode dead letters: publishing to the DLQ fails every time."""

    def encode(self, record: str, datum: Mapping[str, Any], *, version: int | None = None) -> bytes:
        if record == "DeadLetter":
            raise ConnectionError("the DLQ's partition leader is unavailable")
        return super().encode(record, datum, version=version)


async def test_a_dlq_that_cannot_be_written_stops_the_consumer_without_committing_past_the_record(
    fast_retries: CommonSettings, unique: str
) -> None:
    handled: list[bytes] = []

    async def handle(delivery: Delivery) -> None:
        if delivery.value == b"poison":
            raise InvalidMessage("this record can never be processed", code="E_TEST_POISON")
        handled.append(delivery.value)

    with private_topic(fast_retries, f"test.dlqdown.{unique}") as topic:
        produce(fast_retries, topic, [b"one", b"poison", b"two"])
        group = f"g-{unique}"
        catalog = DlqDown.load()
        async with running_consumer(fast_retries, topic, handle, group=group, catalog=catalog) as consumer:
            await eventually(lambda: consumer.fatal is not None, what="the consumer to give up")
            committed = committed_offset(fast_retries, topic, group)
        assert read_all(fast_retries, dlq_of(topic), 1, timeout_s=2) == []
    assert committed == 1, "committed past 'one' only: the poison record is read again after a restart"
    assert handled == [b"one"]


async def test_an_unexpected_error_is_retried_then_fails_its_job_with_e_internal_and_the_consumer_goes_on(
    fast_retries: CommonSettings, unique: str
) -> None:
    # A codec library's ValueError (PyAV's UnknownCodecError is one) repeats however often the record
    # is read: stopping the process would only crash-loop it and hold up every record behind it.
    handled: list[bytes] = []
    calls: list[bytes] = []
    reports: list[tuple[str, str]] = []

    async def handle(delivery: Delivery) -> None:
        calls.append(delivery.value)
        if delivery.value == b"unknown codec":
            raise ValueError("unknown codec 'h266' at /srv/secret/path")
        handled.append(delivery.value)

    async def report(delivery: Delivery, error: InvalidMessage) -> None:
        reports.append((error.code, error.message))

    with private_topic(fast_retries, f"test.unexpected.{unique}") as topic:
        produce(fast_retries, topic, [b"one", b"unknown codec", b"two"])
        group = f"g-{unique}"
        async with running_consumer(
            fast_retries, topic, handle, group=group, on_dead_letter=report
        ) as consumer:
            await eventually(
                lambda: committed_offset(fast_retries, topic, group) == 3, what="commit past all"
            )
            assert consumer.fatal is None, "the consumer keeps serving"
        [dead] = read_all(fast_retries, dlq_of(topic), 1)
    assert handled == [b"one", b"two"]
    assert calls.count(b"unknown codec") == fast_retries.retry_max_attempts, (
        "retried a bounded number of times"
    )
    assert reports == [("E_INTERNAL", "an internal error stopped this job; operators have the details")]
    headers = {k: v.decode() for k, v in dead.headers()}
    assert headers[H_ERROR_CODE] == "E_INTERNAL"
    envelope = SchemaCatalog.load().decode(dead.value(), "DeadLetter")[1]
    assert envelope["reason"].startswith("ValueError: unknown codec 'h266'"), "operators get the error itself"
    assert envelope["attempts"] == fast_retries.retry_max_attempts


async def test_a_database_connection_lost_mid_query_is_transient_and_stops_the_consumer_without_committing(
    fast_retries: CommonSettings, unique: str
) -> None:
    # SQLAlchemy reports a connection the server closed as a plain DBAPIError: it must not read as an
    # unexpected error and fail jobs while the database restarts.
    import asyncpg
    import sqlalchemy.exc

    async def handle(delivery: Delivery) -> None:
        lost = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        raise sqlalchemy.exc.DBAPIError("select 1", None, lost, connection_invalidated=True)

    with private_topic(fast_retries, f"test.dbdown.{unique}") as topic:
        produce(fast_retries, topic, [b"a"])
        async with running_consumer(fast_retries, topic, handle, group=f"g-{unique}") as consumer:
            await eventually(lambda: consumer.fatal is not None, what="the consumer to give up")
        assert committed_offset(fast_retries, topic, f"g-{unique}") < 0, "nothing may be committed"
        assert read_all(fast_retries, dlq_of(topic), 1, timeout_s=2) == []
