"""Helpers shared by the contract tests: where things live and how to walk a schema."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastavro.utils import generate_many

from infiniteflow_common.avro import DEFAULT_ROOT, SchemaCatalog, SchemaVersion

SCHEMA_ROOT = DEFAULT_ROOT
EXAMPLES = DEFAULT_ROOT.parent / "examples"
WRITE_GOLDEN = os.environ.get("INFINITEFLOW_WRITE_GOLDEN") == "1"
"""Set to 1 to create the golden file of a new version; an existing golden file is never rewritten."""


def all_versions(catalog: SchemaCatalog) -> list[SchemaVersion]:
    return [version for record in catalog.records for version in catalog.versions(record)]


def version_id(version: SchemaVersion) -> str:
    return f"{version.record}.v{version.version}"


def golden_path(version: SchemaVersion) -> Path:
    return EXAMPLES / f"{version.record}.v{version.version}.golden.hex"


def format_golden(payload: bytes) -> str:
    """Header (marker + fingerprint) on the first line, then the body in 32-byte lines, for readable diffs."""
    body = payload[10:]
    lines = [payload[:10].hex()] + [body[i : i + 32].hex() for i in range(0, len(body), 32)]
    return "\n".join(lines) + "\n"


def parse_golden(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def named_types(schema: Any) -> Iterator[dict[str, Any]]:
    """Every record and enum definition inside a schema's JSON, the top level included."""
    if isinstance(schema, list):
        for branch in schema:
            yield from named_types(branch)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum"):
            yield schema
        if kind == "record":
            for field in schema["fields"]:
                yield from named_types(field["type"])
        elif kind == "array":
            yield from named_types(schema["items"])
        elif kind == "map":
            yield from named_types(schema["values"])
        elif isinstance(kind, (dict, list)):
            yield from named_types(kind)


def job_params_fields(schema: Any) -> list[str]:
    """The field names of the `JobParams` record a schema inlines."""
    [params] = [named for named in named_types(schema) if named["name"] == "JobParams"]
    return [field["name"] for field in params["fields"]]


def is_nullable(avro_type: Any) -> bool:
    return isinstance(avro_type, list) and "null" in avro_type


def example_payload(catalog: SchemaCatalog, version: SchemaVersion) -> bytes:
    """The version's checked-in example, encoded with that version."""
    example = catalog.example(version.record, version.version)
    return catalog.encode(version.record, example, version=version.version)


def assert_every_version_readable_by_newest(catalog: SchemaCatalog, record: str, samples: int = 25) -> None:
    """Write the example and random data with every version of `record`; the newest reader reads them all.

    Random data (seeded, so a failure reproduces) walks union branches and value ranges the one example
    does not; data of the newest version is included, so a record with one version is covered too.
    """
    newest = catalog.latest(record)
    newest_fields = [field["name"] for field in newest.definition["fields"]]
    state = random.getstate()
    random.seed(f"{record}")
    try:
        for version in catalog.versions(record):
            datums = [catalog.example(record, version.version), *generate_many(version.parsed, samples)]
            for datum in datums:
                payload = catalog.encode(record, datum, version=version.version)
                name, read = catalog.decode(payload, record)
                assert name == record
                assert list(read) == newest_fields, version_id(version)
    finally:
        random.setstate(state)
