"""Topic bootstrap: every topic and its DLQ twin exist with the partitions their manifests ask for."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from infiniteflow_common.topics import TopicSpec


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
