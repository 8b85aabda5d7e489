"""What a group member commits again after a rebalance: only its own finished records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from infiniteflow_common.kafka import ProcessedOffsets


@dataclass
class RecordingClient:
    """Stands in for the confluent Consumer: keeps the commit requests it is given."""

    commits: list[list[tuple[str, int, int]]] = field(default_factory=list)

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous, "a commit from a rebalance callback must never wait for the broker"
        self.commits.append([(o.topic, o.partition, o.offset) for o in offsets])


def test_after_a_rebalance_the_furthest_finished_offset_of_each_kept_partition_is_committed() -> None:
    processed, client = ProcessedOffsets(), RecordingClient()
    processed.record("chunk.ready", 4, 75)
    processed.record("chunk.ready", 4, 74)  # a replayed record finishing late does not move it back
    processed.record("chunk.ready", 2, 12)
    processed.commit_again(client)
    assert client.commits == [[("chunk.ready", 2, 12), ("chunk.ready", 4, 75)]]


def test_partitions_given_up_are_never_committed_over_their_new_owner() -> None:
    processed, client = ProcessedOffsets(), RecordingClient()
    processed.record("chunk.ready", 4, 75)
    processed.record("chunk.ready", 5, 9)
    processed.forget([TopicPartition("chunk.ready", 5)])
    processed.commit_again(client)
    processed.forget([TopicPartition("chunk.ready", 4)])
    processed.commit_again(client)
    assert client.commits == [[("chunk.ready", 4, 75)]], "nothing left to commit: no request at all"


def test_a_client_that_is_closing_does_not_break_the_rebalance_callback() -> None:
    class Closed:
        def commit(self, **_: Any) -> None:
            raise RuntimeError("Consumer closed")

    processed = ProcessedOffsets()
    processed.record("job.split", 0, 3)
    processed.commit_again(Closed())  # logged, not raised into librdkafka's poll
