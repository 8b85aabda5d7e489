"""Object storage through the minio SDK: the client, bucket bootstrap and the incoming-bucket notification."""

from __future__ import annotations

from urllib.parse import urlsplit

from minio import Minio
from minio.notificationconfig import NotificationConfig, QueueConfig

from infiniteflow_common.settings import CommonSettings

# MinIO's ARN for the Kafka target configured as MINIO_NOTIFY_KAFKA_*_PRIMARY in infra/stack.sh.
KAFKA_TARGET_ARN = "arn:minio:sqs::PRIMARY:kafka"
OBJECT_CREATED = "s3:ObjectCreated:*"


def make_client(settings: CommonSettings) -> Minio:
    """A minio client for `S3_ENDPOINT` (http or https) with the configured credentials."""
    url = urlsplit(settings.s3_endpoint)
    return Minio(
        url.netloc,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=url.scheme == "https",
        region=settings.s3_region,
    )


def ensure_buckets(client: Minio, names: list[str]) -> list[str]:
    """Create the missing buckets; returns those it created."""
    created = []
    for name in names:
        if not client.bucket_exists(name):
            client.make_bucket(name)
            created.append(name)
    return created


def ensure_kafka_notification(client: Minio, bucket: str) -> None:
    """Make `bucket` publish every s3:ObjectCreated:* event to MinIO's Kafka target (idempotent)."""
    config = NotificationConfig(
        queue_config_list=[
            QueueConfig([OBJECT_CREATED], config_id="infiniteflow-ingest", queue=KAFKA_TARGET_ARN)
        ]
    )
    client.set_bucket_notification(bucket, config)
