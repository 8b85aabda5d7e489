"""Every released version has an example that encodes, decodes, and pins the encoder's exact bytes."""

from __future__ import annotations

import io

import pytest
from fastavro import schemaless_reader

from infiniteflow_common.avro import SchemaCatalog, SchemaVersion

from .support import (
    EXAMPLES,
    WRITE_GOLDEN,
    all_versions,
    example_payload,
    format_golden,
    golden_path,
    parse_golden,
    version_id,
)

VERSIONS = all_versions(SchemaCatalog.load())


def test_every_example_file_belongs_to_a_released_version() -> None:
    released = {version_id(v) for v in VERSIONS}
    examples = {p.name.removesuffix(".json") for p in EXAMPLES.glob("*.json")}
    goldens = {p.name.removesuffix(".golden.hex") for p in EXAMPLES.glob("*.golden.hex")}
    assert examples == released
    assert goldens == released


@pytest.mark.parametrize("version", VERSIONS, ids=version_id)
def test_example_decodes_with_its_own_version(catalog: SchemaCatalog, version: SchemaVersion) -> None:
    example = catalog.example(version.record, version.version)
    payload = catalog.encode(version.record, example, version=version.version)

    assert payload[:10] == b"\xc3\x01" + version.fingerprint
    # Read with the writer schema alone: exactly the example back (logical types as Python objects).
    as_written = schemaless_reader(io.BytesIO(payload[10:]), version.parsed, None)
    assert isinstance(as_written, dict)
    assert catalog.encode(version.record, as_written, version=version.version) == payload


@pytest.mark.parametrize("version", VERSIONS, ids=version_id)
def test_example_decodes_with_the_newest_reader(catalog: SchemaCatalog, version: SchemaVersion) -> None:
    payload = example_payload(catalog, version)

    record, datum = catalog.decode(payload, version.record)

    assert record == version.record
    newest_fields = [f["name"] for f in catalog.latest(version.record).definition["fields"]]
    assert list(datum) == newest_fields


@pytest.mark.parametrize("version", VERSIONS, ids=version_id)
def test_encoding_the_example_gives_the_golden_bytes(catalog: SchemaCatalog, version: SchemaVersion) -> None:
    """A changed golden file means the encoder changed its output: a breaking change for every reader."""
    payload = example_payload(catalog, version)
    path = golden_path(version)
    if not path.exists():
        if not WRITE_GOLDEN:
            pytest.fail(f"{path.name} is missing: run with INFINITEFLOW_WRITE_GOLDEN=1 once to create it")
        path.write_text(format_golden(payload), encoding="ascii")

    golden = parse_golden(path.read_text(encoding="ascii"))

    assert payload.hex() == golden.hex()


@pytest.mark.parametrize("version", VERSIONS, ids=version_id)
def test_golden_bytes_stay_readable_by_the_newest_reader(
    catalog: SchemaCatalog, version: SchemaVersion
) -> None:
    # The golden files are real messages of every released version: the oldest must keep decoding.
    golden = parse_golden(golden_path(version).read_text(encoding="ascii"))

    record, datum = catalog.decode(golden, version.record)

    assert record == version.record
    assert datum["job_id"] is not None or version.record == "DeadLetter"
