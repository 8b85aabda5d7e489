"""Joining the consumer group: one member per process, manual commits, cooperative rebalancing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from faststream.confluent import KafkaBroker
from faststream.confluent import KafkaMessage as KafkaMessageParam
from faststream.middlewares import AckPolicy

from infiniteflow_common.health import GroupMembership
from infiniteflow_common.kafka.consumer import ReliableConsumer
from infiniteflow_common.kafka.delivery import record_of
from infiniteflow_common.kafka.offsets import ProcessedOffsets


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
    on_assign, on_revoke, on_lost = _rebalance_callbacks(processed, membership)

    async def on_message(message: KafkaMessageParam) -> None:
        await by_topic[str(record_of(message).topic())](message)

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


Callback = Callable[[Any, list[Any]], None]  # librdkafka's rebalance callback: (client, partitions)


def _rebalance_callbacks(
    processed: ProcessedOffsets, membership: GroupMembership | None
) -> tuple[Callback, Callback, Callback]:
    """on_assign, on_revoke, on_lost: keep `membership` and the processed offsets in step."""

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

    return on_assign, on_revoke, on_lost
