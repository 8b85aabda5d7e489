"""Kafka building blocks, one idea per module (as getsentry/arroyo lays them out).

* `broker`: the broker factory (`make_broker`);
* `admin`: topic bootstrap (`ensure_topics`);
* `delivery`: a record as a handler sees it (`Delivery`) and the job it belongs to;
* `consumer`: `ReliableConsumer`, the per-message commit / retry / dead-letter policy;
* `group`: joining the consumer group (`subscribe`), rebalance callbacks;
* `offsets`: commits after durable work, made again after a rebalance;
* `dlq`: the dead letter, its headers and the DLQ circuit breaker;
* `retry`: the backoff between retries;
* `errors`: `ConsumerStopped` and the permanent-failure decision a consumer is given.

The names callers use are re-exported here; what a test patches (`offsets.send_commit`) is patched
in its own module.
"""

from infiniteflow_common.kafka.admin import ensure_topics
from infiniteflow_common.kafka.broker import make_broker
from infiniteflow_common.kafka.consumer import ReliableConsumer
from infiniteflow_common.kafka.delivery import Delivery, Handler, job_id_from_key
from infiniteflow_common.kafka.dlq import (
    H_ERROR_CODE,
    H_ERROR_REASON,
    H_ORIGIN_OFFSET,
    H_ORIGIN_PARTITION,
    H_ORIGIN_TOPIC,
    H_SERVICE,
    publish_dead_letter,
)
from infiniteflow_common.kafka.errors import ConsumerStopped, PermanentFailure
from infiniteflow_common.kafka.group import subscribe
from infiniteflow_common.kafka.offsets import ProcessedOffsets
from infiniteflow_common.kafka.retry import backoff_delay

__all__ = [
    "H_ERROR_CODE",
    "H_ERROR_REASON",
    "H_ORIGIN_OFFSET",
    "H_ORIGIN_PARTITION",
    "H_ORIGIN_TOPIC",
    "H_SERVICE",
    "ConsumerStopped",
    "Delivery",
    "Handler",
    "PermanentFailure",
    "ProcessedOffsets",
    "ReliableConsumer",
    "backoff_delay",
    "ensure_topics",
    "job_id_from_key",
    "make_broker",
    "publish_dead_letter",
    "subscribe",
]
