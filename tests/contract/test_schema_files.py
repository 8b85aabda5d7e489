"""The schema files themselves: named by convention, self-contained, documented everywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastavro import parse_schema

from infiniteflow_common.avro import NAMESPACE, SchemaCatalog

from .support import SCHEMA_ROOT, all_versions, named_types, version_id

EXPECTED_RECORDS = {
    "VideoUploaded",
    "JobSplit",
    "ChunkReady",
    "ChunkInterpolated",
    "JobCompleted",
    "JobFailed",
    "JobCancelled",
    "DeadLetter",
}
SCHEMA_FILES = sorted(SCHEMA_ROOT.glob("*.avsc"))


def test_every_event_of_the_design_has_a_schema(catalog: SchemaCatalog) -> None:
    assert set(catalog.records) == EXPECTED_RECORDS


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_each_file_parses_on_its_own(path: Any) -> None:
    # Self-contained: parsed with an empty table of named types, so no file depends on another.
    parse_schema(json.loads(path.read_text(encoding="utf-8")), named_schemas={})


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_the_record_and_every_field_and_enum_have_a_doc(path: Any) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    undocumented = []
    for named in named_types(schema):
        if not str(named.get("doc", "")).strip():
            undocumented.append(named["name"])
        for field in named.get("fields", []):
            if not str(field.get("doc", "")).strip():
                undocumented.append(f"{named['name']}.{field['name']}")
    assert undocumented == []


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_field_names_are_snake_case(path: Any) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    names = [f["name"] for named in named_types(schema) for f in named.get("fields", [])]
    assert [n for n in names if n != n.lower() or not n.replace("_", "").isalnum()] == []


def test_every_record_lives_in_the_project_namespace(catalog: SchemaCatalog) -> None:
    for version in all_versions(catalog):
        assert version.definition["namespace"] == NAMESPACE, version_id(version)
        assert version.parsed["name"] == f"{NAMESPACE}.{version.record}"


def test_job_ids_are_uuids_and_timestamps_are_utc_millis(catalog: SchemaCatalog) -> None:
    for version in all_versions(catalog):
        for field in version.definition["fields"]:
            branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
            logical = {b.get("logicalType") for b in branches if isinstance(b, dict)}
            if field["name"] == "job_id":
                assert logical == {"uuid"}, version_id(version)
            if field["name"].endswith("_at") or field["name"].endswith("_timestamp"):
                assert logical == {"timestamp-millis"}, f"{version_id(version)}.{field['name']}"


def test_every_event_but_the_dead_letter_requires_a_job_id(catalog: SchemaCatalog) -> None:
    for record in catalog.records:
        fields = {f["name"]: f["type"] for f in catalog.latest(record).definition["fields"]}
        assert "job_id" in fields, record
        if record != "DeadLetter":
            assert not isinstance(fields["job_id"], list), f"{record}.job_id must not be nullable"


def test_nullable_fields_default_to_null(catalog: SchemaCatalog) -> None:
    # A nullable field without a default could never be added in a later version, so keep the habit.
    for version in all_versions(catalog):
        for named in named_types(version.definition):
            for field in named.get("fields", []):
                if isinstance(field["type"], list) and "null" in field["type"]:
                    assert field["type"][0] == "null", f"{version_id(version)}: {field['name']}"
                    assert "default" in field, field["name"]
                    assert field["default"] is None, field["name"]


def test_a_nested_record_has_one_shape_across_the_newest_versions(catalog: SchemaCatalog) -> None:
    # Each file inlines the nested records it uses; among the newest versions the copies must agree,
    # since one pydantic model (events.py) stands for each of them.
    shapes: dict[str, tuple[str, str]] = {}
    for record in catalog.records:
        latest = catalog.latest(record)
        for named in named_types(latest.definition):
            if named["name"] == record:
                continue
            shape = json.dumps(named, sort_keys=True)
            seen = shapes.setdefault(named["name"], (shape, version_id(latest)))
            assert seen[0] == shape, f"{named['name']} differs between {seen[1]} and {version_id(latest)}"
    assert {"JobParams", "MediaProbe", "OutputSlot", "UploadSource"} <= set(shapes)
