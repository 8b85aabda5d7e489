"""A job's `priority` (JobParams v3): released messages read as 0, new ones carry it, both directions resolve.

The priority rides in `JobParams`, which VideoUploaded, JobCompleted and JobFailed inline, so each of
them has a version that adds it (VideoUploaded v3, JobCompleted v4, JobFailed v3).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from fastavro import schemaless_reader
from pydantic import ValidationError

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.errors import InvalidMessage, UnknownSchemaError
from infiniteflow_common.events import JobCompleted, JobFailed, JobParams, VideoUploaded, decode_event

from .support import EXAMPLES, SCHEMA_ROOT, golden_path, job_params_fields, parse_golden

FIRST_WITH_PRIORITY = {"VideoUploaded": 3, "JobCompleted": 4, "JobFailed": 3}
MODELS: dict[str, type[VideoUploaded | JobCompleted | JobFailed]] = {
    "VideoUploaded": VideoUploaded,
    "JobCompleted": JobCompleted,
    "JobFailed": JobFailed,
}


def _released_before_priority(catalog: SchemaCatalog) -> list[tuple[str, int]]:
    return [
        (record, version.version)
        for record, first in FIRST_WITH_PRIORITY.items()
        for version in catalog.versions(record)
        if version.version < first
    ]


@pytest.mark.parametrize(("record", "first"), FIRST_WITH_PRIORITY.items())
def test_the_priority_arrived_in_one_version_and_stays_in_every_later_one(
    catalog: SchemaCatalog, record: str, first: int
) -> None:
    for version in catalog.versions(record):
        assert ("priority" in job_params_fields(version.definition)) == (version.version >= first), version


@pytest.mark.parametrize(
    ("record", "version"), _released_before_priority(SchemaCatalog.load()), ids=lambda v: str(v)
)
def test_messages_written_before_priorities_existed_read_as_priority_0(
    catalog: SchemaCatalog, record: str, version: int
) -> None:
    # An old producer (the released golden bytes), the new reader.
    released = parse_golden(golden_path(catalog.get(record, version)).read_text("ascii"))

    event = decode_event(catalog, released, MODELS[record])

    assert event.params is not None
    assert event.params.priority == 0


def test_a_new_video_uploaded_carries_its_priority(catalog: SchemaCatalog) -> None:
    event = VideoUploaded.from_avro(catalog.example("VideoUploaded", 3))

    decoded = decode_event(catalog, catalog.encode("VideoUploaded", event.to_avro()), VideoUploaded)

    assert decoded == event
    assert decoded.params.priority == 40


@pytest.mark.parametrize(("record", "old"), [("VideoUploaded", 2), ("JobCompleted", 3), ("JobFailed", 2)])
def test_a_reader_still_on_the_previous_version_reads_a_new_message_without_the_priority(
    catalog: SchemaCatalog, record: str, old: int
) -> None:
    # Avro resolution, new writer → old reader schema: the added field is skipped, the rest reads as written.
    new = catalog.get(record, old + 1)  # the version that added the priority
    payload = catalog.encode(record, catalog.example(record, new.version), version=new.version)
    as_written = schemaless_reader(io.BytesIO(payload[10:]), new.parsed, None)

    read = schemaless_reader(io.BytesIO(payload[10:]), new.parsed, catalog.get(record, old).parsed)

    assert isinstance(as_written, dict)
    assert as_written["params"]["priority"] != 0
    del as_written["params"]["priority"]
    assert read == as_written


def test_a_build_without_the_new_version_refuses_its_messages_as_unknown_not_misread(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    # Why readers roll out before writers: an old build cannot even find the writer schema.
    old_build = tmp_path / "schemas"
    later = [f"VideoUploaded.v{n}.*" for n in range(3, catalog.latest("VideoUploaded").version + 1)]
    shutil.copytree(SCHEMA_ROOT, old_build / "avro", ignore=shutil.ignore_patterns(*later))
    shutil.copytree(EXAMPLES, old_build / "examples", ignore=shutil.ignore_patterns(*later))
    old_catalog = SchemaCatalog.load(old_build / "avro")
    payload = catalog.encode("VideoUploaded", catalog.example("VideoUploaded", 3), version=3)

    with pytest.raises(UnknownSchemaError) as caught:
        old_catalog.decode(payload, "VideoUploaded")

    assert caught.value.code == "E_UNKNOWN_SCHEMA"
    assert catalog.get("VideoUploaded", 3).fingerprint.hex() in caught.value.message


@pytest.mark.parametrize("priority", [-50, 0, 50])
def test_a_priority_from_minus_50_to_50_is_valid(priority: int) -> None:
    params = JobParams(
        multiplier=2, target_fps=None, engine="rife", quality="fast", webhook_url=None, priority=priority
    )
    assert params.priority == priority


@pytest.mark.parametrize("priority", [-51, 51, 32767])
def test_a_priority_outside_minus_50_to_50_is_refused(priority: int) -> None:
    with pytest.raises(ValidationError, match="priority"):
        JobParams(
            multiplier=2, target_fps=None, engine="rife", quality="fast", webhook_url=None, priority=priority
        )


def test_a_message_with_an_out_of_range_priority_is_an_invalid_event(catalog: SchemaCatalog) -> None:
    datum = catalog.example("VideoUploaded")
    datum["params"] = {**datum["params"], "priority": 99}
    payload = catalog.encode("VideoUploaded", datum)

    with pytest.raises(InvalidMessage, match=r"params\.priority") as caught:
        decode_event(catalog, payload, VideoUploaded)

    assert caught.value.code == "E_EVENT_INVALID"
