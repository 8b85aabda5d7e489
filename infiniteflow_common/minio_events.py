"""MinIO's bucket-notification JSON, parsed into typed object-created events.

MinIO URL-encodes object keys in events (a space arrives as `+`, a literal `+` as `%2B`), so keys are
decoded with `unquote_plus`. User metadata arrives as `X-Amz-Meta-<Name>` keys; names are lower-cased
and stripped of the prefix (`multiplier`, `target-fps`, `engine`, `webhook-url`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict

from infiniteflow_common.errors import InvalidMessage

META_PREFIX = "x-amz-meta-"


class MalformedSourceEvent(InvalidMessage):
    """The notification is not JSON of MinIO's S3 event shape."""

    code = "E_SOURCE_EVENT_MALFORMED"


class ObjectCreated(BaseModel):
    """One s3:ObjectCreated:* record."""

    model_config = ConfigDict(frozen=True)

    event_name: str
    event_time: datetime | None
    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None
    content_type: str | None
    user_metadata: dict[str, str]
    sequencer: str | None


class Ignored(BaseModel):
    """A well-formed notification that is not a new object (a test event, a delete, …)."""

    model_config = ConfigDict(frozen=True)

    reason: str


def parse_notification(payload: bytes) -> list[ObjectCreated | Ignored]:
    """Every record of one notification; raises `MalformedSourceEvent` when it is not one."""
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedSourceEvent(f"notification is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MalformedSourceEvent("notification is not a JSON object")
    if document.get("Event") == "s3:TestEvent" or ("Records" not in document and "Event" in document):
        return [Ignored(reason="test_event")]
    records = document.get("Records")
    if not isinstance(records, list) or not records:
        raise MalformedSourceEvent("notification has no Records list")
    return [_parse_record(record) for record in records]


def _parse_record(record: Any) -> ObjectCreated | Ignored:
    try:
        event_name = str(record["eventName"])
        s3 = record["s3"]
        obj = s3["object"]
        bucket = str(s3["bucket"]["name"])
        raw_key = str(obj["key"])
    except (KeyError, TypeError) as exc:
        raise MalformedSourceEvent(f"record lacks {exc} (eventName, s3.bucket.name, s3.object.key)") from exc
    if not event_name.startswith("s3:ObjectCreated:"):
        return Ignored(reason="not_created")
    metadata = {
        name.lower().removeprefix(META_PREFIX): str(value)
        for name, value in (obj.get("userMetadata") or {}).items()
        if name.lower().startswith(META_PREFIX)
    }
    content_type = (obj.get("userMetadata") or {}).get("content-type") or obj.get("contentType")
    event_time = record.get("eventTime")
    return ObjectCreated(
        event_name=event_name,
        event_time=datetime.fromisoformat(event_time.replace("Z", "+00:00")) if event_time else None,
        bucket=bucket,
        key=unquote_plus(raw_key),
        size=int(obj.get("size") or 0),
        etag=str(obj.get("eTag") or "").strip('"'),
        version_id=obj.get("versionId") or None,
        content_type=content_type,
        user_metadata=metadata,
        sequencer=obj.get("sequencer"),
    )
