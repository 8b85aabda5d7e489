"""Object storage through the minio SDK: the client, bucket bootstrap and the incoming-bucket notification."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.deleteobjects import DeleteObject
from minio.error import S3Error, ServerError
from minio.helpers import DictType
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


# --- what an object-store failure means for the job -------------------------------------------------

# S3 error codes that no retry can fix: the object (or its version, or its bucket) is gone, we may not
# read it, or it is no longer the version the job was made from. Everything else (connection errors,
# 5xx, throttling) is the server's trouble and stays transient.
GONE_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchBucket"})
FORBIDDEN_CODES = frozenset({"AccessDenied"})
CHANGED_CODES = frozenset({"PreconditionFailed"})
PRECONDITION_FAILED = 412


class ObjectUnavailableError(InfiniteFlowError):
    """An object a job needs can never be read as it was (permanent): the job fails with this code.

    `E_SOURCE_GONE` (deleted: key, version or bucket), `E_SOURCE_FORBIDDEN` (access denied) or
    `E_SOURCE_CHANGED` (replaced since the job was made: its ETag precondition failed).
    """

    code = "E_SOURCE_GONE"


def permanent_storage_failure(exc: BaseException) -> ObjectUnavailableError | None:
    """The permanent job failure a minio error stands for, or None when retrying may help.

    The one place that classifies object-store errors: handlers (through `job_fails_on`), the reliable
    consumer (for errors that escape a handler) and ingest's download all ask it.
    """
    if isinstance(exc, S3Error):
        where = _object_of(exc)
        if exc.code in GONE_CODES:
            return ObjectUnavailableError(
                f"{where} no longer exists ({exc.code}); upload the video again", code="E_SOURCE_GONE"
            )
        if exc.code in FORBIDDEN_CODES:
            return ObjectUnavailableError(
                f"{where} may not be read with the service's credentials (AccessDenied); fix the bucket "
                "policy, then upload the video again",
                code="E_SOURCE_FORBIDDEN",
            )
        if exc.code in CHANGED_CODES:
            return _changed(where)
    # A HEAD request carries no error body, so a failed If-Match there arrives as a bare 412.
    if isinstance(exc, ServerError) and exc.status_code == PRECONDITION_FAILED:
        return _changed("the object")
    return None


def _changed(where: str) -> ObjectUnavailableError:
    return ObjectUnavailableError(
        f"{where} was replaced after the job was made (PreconditionFailed); the new upload is a job of "
        "its own",
        code="E_SOURCE_CHANGED",
    )


def _object_of(exc: S3Error) -> str:
    if exc.object_name:
        return f"the object {exc.object_name!r} in {exc.bucket_name!r}"
    if exc.bucket_name:
        return f"the bucket {exc.bucket_name!r}"
    return "the object"


DOWNLOAD_READ = 8 << 20
"""Bytes per read of a download: plain large reads (urllib3's `stream()` costs a second per GB here)."""


def download(
    client: Minio,
    bucket: str,
    key: str,
    path: Path,
    *,
    version_id: str | None,
    etag: str | None,
    streams: int = 2,
    check_size: Callable[[int], None] | None = None,
) -> int:
    """Download one exact version of an object into `path` with `streams` ranged GETs side by side;
    returns its size.

    One GET stream is bound by a single connection's copy loop on both ends (about 250 MB/s from a
    local MinIO here); contiguous ranges fetched side by side and written in place at their offsets
    take half the time with two. Each range carries `If-Match` on the ETag (and the version id), so the
    parts are of one object version, and each must be exactly as long as asked. A deleted, forbidden or
    replaced object raises its permanent `ObjectUnavailableError`; other failures stay transient.
    `check_size` sees the object's size before anything is read, and raises to refuse it.
    """
    match: DictType | None = {"If-Match": f'"{etag.strip(chr(34))}"'} if etag else None
    try:
        info = client.stat_object(bucket, key, version_id=version_id)
        if etag and (info.etag or "").strip('"') != etag.strip('"'):
            raise _changed(f"the object {key!r}")
        size = int(info.size or 0)
        if check_size is not None:
            check_size(size)
        spans = _ranges(size, max(1, streams))
        with path.open("wb") as out:
            out.truncate(size)
        if len(spans) > 1:
            with ThreadPoolExecutor(len(spans), thread_name_prefix="download") as pool:
                for done in [
                    pool.submit(_fetch_range, client, bucket, key, path, span, version_id, match)
                    for span in spans
                ]:
                    done.result()
        elif spans:
            _fetch_range(client, bucket, key, path, spans[0], version_id, match)
    except (S3Error, ServerError) as exc:
        if (error := permanent_storage_failure(exc)) is not None:
            raise error from exc
        raise
    return size


def _ranges(size: int, streams: int) -> list[tuple[int, int]]:
    """`streams` contiguous (offset, length) spans covering `size` bytes; at least 8 MiB each."""
    count = max(1, min(streams, size // DOWNLOAD_READ))
    step = -(-size // count) if size else 0
    return [(offset, min(step, size - offset)) for offset in range(0, size, step)] if size else []


def _fetch_range(
    client: Minio,
    bucket: str,
    key: str,
    path: Path,
    span: tuple[int, int],
    version_id: str | None,
    match: DictType | None,
) -> None:
    offset, length = span
    response = client.get_object(
        bucket, key, offset=offset, length=length, version_id=version_id, request_headers=match
    )
    position = offset
    try:
        with path.open("r+b") as out:
            out.seek(offset)
            while piece := response.read(min(DOWNLOAD_READ, offset + length - position)):
                out.write(piece)
                position += len(piece)
    finally:
        response.close()
        response.release_conn()
    if position != offset + length:
        # A connection cut mid-range: retrying the download may help, so this is not permanent.
        raise ConnectionError(
            f"the object {key!r} ended after {position - offset:,} of {length:,} bytes of its range "
            f"at {offset:,}"
        )


def fetch_source(
    client: Minio,
    bucket: str,
    key: str,
    path: Path,
    *,
    version_id: str | None,
    etag: str,
    streams: int = 2,
) -> None:
    """Download the probed version of a source object; a deleted or changed one is a permanent error."""
    download(client, bucket, key, path, version_id=version_id, etag=etag, streams=streams)


def check_source(client: Minio, bucket: str, key: str, *, version_id: str | None, etag: str) -> None:
    """Raise the permanent error of a source that is no longer the probed object (deleted, forbidden or
    replaced); return when it still is.

    A reader streaming the source over HTTP sees a deletion mid-read as broken data, not as a 404:
    asking the store tells a damaged file from a missing one.
    """
    try:
        info = client.stat_object(bucket, key, version_id=version_id)
    except (S3Error, ServerError) as exc:
        if (error := permanent_storage_failure(exc)) is not None:
            raise error from exc
        raise
    if version_id is None and (info.etag or "").strip('"') != etag.strip('"'):
        raise _changed(f"the object {key!r}")


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
