"""The broker factory: one faststream `KafkaBroker` per service, its producer safe to retry."""

from __future__ import annotations

import logging
from typing import Any

from faststream.confluent import KafkaBroker
from faststream.confluent.prometheus import KafkaPrometheusMiddleware
from prometheus_client import REGISTRY

from infiniteflow_common.settings import CommonSettings


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
