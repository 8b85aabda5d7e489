"""Object storage through the minio SDK: the client, bucket bootstrap and the incoming-bucket notification."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from minio.notificationconfig import NotificationConfig, QueueConfig

from infiniteflow_common.errors import InfiniteFlowError
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


class SourceUnavailableError(InfiniteFlowError):
    """The job's source object is gone, changed since it was probed, or not readable (permanent)."""

    code = "E_SOURCE_GONE"


SOURCE_ERRORS = {
    "NoSuchKey": ("E_SOURCE_GONE", "the source object was deleted before the job finished"),
    "NoSuchVersion": ("E_SOURCE_GONE", "the probed version of the source object was deleted"),
    "NoSuchBucket": ("E_SOURCE_GONE", "the source bucket no longer exists"),
    "PreconditionFailed": (
        "E_SOURCE_CHANGED",
        "the source object was overwritten after it was probed; upload it again to process the new file",
    ),
    "AccessDenied": ("E_SOURCE_FORBIDDEN", "the pipeline may no longer read the source object"),
}


def source_error(exc: S3Error) -> InfiniteFlowError | None:
    """The permanent job error an S3 error on the source means; None when it is worth retrying."""
    known = SOURCE_ERRORS.get(exc.code or "")
    if known is None:
        return None
    code, message = known
    return SourceUnavailableError(f"{message} ({exc.code})", code=code)


def fetch_source(
    client: Minio, bucket: str, key: str, path: Path, *, version_id: str | None, etag: str
) -> None:
    """Download the probed version of a source object; a deleted or changed one is a permanent error."""
    try:
        client.fget_object(
            bucket, key, str(path), version_id=version_id, request_headers={"If-Match": f'"{etag}"'}
        )
    except S3Error as exc:
        if (error := source_error(exc)) is not None:
            raise error from exc
        raise


def source_url(client: Minio, bucket: str, key: str, *, version_id: str | None, expires_s: float) -> str:
    """A presigned GET of the probed version, for a reader that fetches only the ranges it needs."""
    return client.presigned_get_object(
        bucket, key, expires=timedelta(seconds=max(60.0, expires_s)), version_id=version_id
    )


def delete_prefix(client: Minio, bucket: str, prefix: str) -> int:
    """Delete every object under `prefix` (a job's work objects); returns how many were named."""
    names = [
        DeleteObject(o.object_name)
        for o in client.list_objects(bucket, prefix=prefix, recursive=True)
        if o.object_name
    ]
    if names:
        for error in client.remove_objects(bucket, names):
            raise OSError(f"could not delete {error.name} from {bucket}: {error.message}")
    return len(names)


def ensure_expiry(client: Minio, bucket: str, days: int | None, rule_id: str) -> None:
    """Expire the bucket's objects `days` after they were written (None or 0: keep them)."""
    if not days:
        try:
            client.delete_bucket_lifecycle(bucket)
        except S3Error as exc:
            if exc.code != "NoSuchLifecycleConfiguration":
                raise
        return
    rule = Rule(ENABLED, rule_filter=Filter(prefix=""), rule_id=rule_id, expiration=Expiration(days=days))
    client.set_bucket_lifecycle(bucket, LifecycleConfig([rule]))
