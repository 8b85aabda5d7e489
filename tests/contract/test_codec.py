"""The wire format and how the codec refuses what it cannot read."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from infiniteflow_common.avro import (
    MARKER,
    SchemaCatalog,
    SchemaCatalogError,
    schema_fingerprint,
)
from infiniteflow_common.errors import DecodeError, InfiniteFlowError, InvalidMessage, UnknownSchemaError

from .support import SCHEMA_ROOT, example_payload


def test_fingerprint_is_crc64_avro_little_endian_as_the_spec_gives_it() -> None:
    # Avro's own test vector: CRC-64-AVRO of the canonical form '"null"' is 0x63dd24e7cc258f8a.
    assert schema_fingerprint('"null"') == (0x63DD24E7CC258F8A).to_bytes(8, "little")


def test_a_message_is_marker_then_fingerprint_then_body(catalog: SchemaCatalog) -> None:
    latest = catalog.latest("JobSplit")

    payload = example_payload(catalog, latest)

    assert payload[:2] == MARKER == b"\xc3\x01"
    assert payload[2:10] == latest.fingerprint == schema_fingerprint(latest.canonical_form)


def test_encode_writes_the_newest_version_unless_told(catalog: SchemaCatalog) -> None:
    datum = catalog.example("JobSplit")
    first = catalog.example("JobSplit", 1)

    assert catalog.latest("JobSplit").version > 1
    assert catalog.encode("JobSplit", datum)[2:10] == catalog.latest("JobSplit").fingerprint
    assert catalog.encode("JobSplit", first, version=1)[2:10] == catalog.get("JobSplit", 1).fingerprint


def test_decode_returns_the_record_name_and_a_typed_datum(catalog: SchemaCatalog) -> None:
    payload = catalog.encode("JobFailed", catalog.example("JobFailed"))

    record, datum = catalog.decode(payload)

    assert record == "JobFailed"
    assert str(datum["job_id"]) == "8d1e4c0a-2b7f-4f3e-9a61-5c0b3e2d7f19"
    assert datum["failed_at"].tzinfo is not None
    assert datum["params"]["target_fps"] == "60000/1001"


def test_unknown_fingerprint_is_refused_naming_the_fingerprint(catalog: SchemaCatalog) -> None:
    payload = bytearray(example_payload(catalog, catalog.latest("JobSplit")))
    payload[2:10] = bytes.fromhex("0123456789abcdef")

    with pytest.raises(UnknownSchemaError, match="0123456789abcdef") as caught:
        catalog.decode(bytes(payload))

    assert caught.value.code == "E_UNKNOWN_SCHEMA"


@pytest.mark.parametrize("cut", [1, 7, 40])
def test_truncated_body_is_a_decode_error(catalog: SchemaCatalog, cut: int) -> None:
    payload = example_payload(catalog, catalog.latest("VideoUploaded"))

    with pytest.raises(DecodeError) as caught:
        catalog.decode(payload[:-cut])

    assert caught.value.code == "E_DECODE"


def test_trailing_bytes_after_the_body_are_a_decode_error(catalog: SchemaCatalog) -> None:
    payload = example_payload(catalog, catalog.latest("JobSplit"))

    with pytest.raises(DecodeError, match="trailing"):
        catalog.decode(payload + b"\x00")


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc3", b"\xc3\x01\x00\x00", b'{"job_id": "3f6f2b1e"}', b"\x00\x00\x00\x00\x01" + b"\x00" * 10],
    ids=["empty", "marker-only", "short-fingerprint", "json", "confluent-wire-format"],
)
def test_anything_without_the_single_object_header_is_a_decode_error(
    catalog: SchemaCatalog, payload: bytes
) -> None:
    with pytest.raises(DecodeError, match="single-object"):
        catalog.decode(payload)


def test_decode_refuses_another_record_than_expected(catalog: SchemaCatalog) -> None:
    payload = example_payload(catalog, catalog.latest("ChunkReady"))

    with pytest.raises(InvalidMessage, match="expected a ChunkInterpolated message") as caught:
        catalog.decode(payload, "ChunkInterpolated")

    assert caught.value.code == "E_UNEXPECTED_RECORD"


def test_every_decode_failure_is_permanent_so_it_goes_to_the_dlq() -> None:
    assert issubclass(DecodeError, InvalidMessage)
    assert issubclass(UnknownSchemaError, InvalidMessage)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chunk_count": "eight"}, "chunk_count"),
        ({"scene_cuts": None}, "scene_cuts"),
        ({"chunk_counts": 8}, "more fields"),
        ({"job_id": "job-42"}, "UUID"),
    ],
    ids=["wrong-type", "null-for-required", "unknown-field", "not-a-uuid"],
)
def test_a_datum_that_breaks_the_schema_is_a_producer_bug_not_an_invalid_message(
    catalog: SchemaCatalog, change: dict[str, Any], message: str
) -> None:
    datum = {**catalog.example("JobSplit"), **change}

    with pytest.raises(InfiniteFlowError, match=message) as caught:
        catalog.encode("JobSplit", datum)

    assert caught.value.code == "E_ENCODE"
    assert not isinstance(caught.value, InvalidMessage)


def test_a_tuple_in_a_nullable_array_field_is_the_array_not_union_notation(catalog: SchemaCatalog) -> None:
    datum = catalog.example("JobSplit") | {"vfr_kept": True, "vfr_pts": (0, 33, 67), "scene_cuts": (1,)}
    as_lists = datum | {"vfr_pts": [0, 33, 67], "scene_cuts": [1]}

    payload = catalog.encode("JobSplit", datum)

    assert payload == catalog.encode("JobSplit", as_lists)
    assert catalog.decode(payload)[1]["vfr_pts"] == [0, 33, 67]


def test_a_missing_field_is_refused_even_when_nullable(catalog: SchemaCatalog) -> None:
    datum = dict(catalog.example("VideoUploaded"))
    del datum["version_id"]

    with pytest.raises(InfiniteFlowError, match="version_id"):
        catalog.encode("VideoUploaded", datum)


def test_unknown_record_or_version_is_a_catalog_error(catalog: SchemaCatalog) -> None:
    with pytest.raises(SchemaCatalogError, match="unknown record 'Nope'"):
        catalog.latest("Nope")
    with pytest.raises(SchemaCatalogError, match="no version 99"):
        catalog.get("JobSplit", 99)


def test_concurrent_decoding_shares_one_catalog(catalog: SchemaCatalog) -> None:
    payloads = [example_payload(catalog, catalog.latest(record)) for record in catalog.records]
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                for payload in payloads:
                    catalog.decode(payload)
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []


def copy_schemas(tmp_path: Path) -> Path:
    root = tmp_path / "avro"
    shutil.copytree(SCHEMA_ROOT, root)
    return root


def test_catalog_refuses_a_badly_named_file(tmp_path: Path) -> None:
    root = copy_schemas(tmp_path)
    (root / "JobSplit.v1.avsc").rename(root / "JobSplit-v1.avsc")

    with pytest.raises(SchemaCatalogError, match=r"<Record>\.v<N>\.avsc"):
        SchemaCatalog.load(root)


def test_catalog_refuses_a_gap_in_versions(tmp_path: Path) -> None:
    root = copy_schemas(tmp_path)
    (root / "JobSplit.v1.avsc").rename(root / "JobSplit.v2.avsc")

    with pytest.raises(SchemaCatalogError, match="without gaps"):
        SchemaCatalog.load(root)


def test_catalog_refuses_a_new_version_that_only_changes_docs(tmp_path: Path) -> None:
    root = copy_schemas(tmp_path)
    text = (root / "JobSplit.v1.avsc").read_text(encoding="utf-8")
    (root / "JobSplit.v2.avsc").write_text(text.replace("The job that was split.", "Split job."))

    with pytest.raises(SchemaCatalogError, match="same fingerprint"):
        SchemaCatalog.load(root)


def test_catalog_refuses_a_file_whose_record_name_differs_from_its_file_name(tmp_path: Path) -> None:
    root = copy_schemas(tmp_path)
    (root / "JobSplit.v1.avsc").rename(root / "JobSplat.v1.avsc")

    with pytest.raises(SchemaCatalogError, match="must be named"):
        SchemaCatalog.load(root)
