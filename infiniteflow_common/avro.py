"""Avro codec for every topic but `minio.events`: single-object encoding, resolved to the newest reader.

Wire format (Avro spec, "Single-object encoding"): ``C3 01`` + the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's Parsing Canonical Form + the Avro binary body. No schema registry
runs, so the fingerprint alone names the writer schema; it must be one of the `.avsc` files under
`schemas/avro/` (`<Record>.v<N>.avsc`). Decoding always resolves the writer schema to the newest version
of the same record, so consumers see one shape per record whichever producer version wrote it.

The catalog parses every file once at `load()` and is immutable afterwards, so concurrent reads need no
lock. Failures map to `infiniteflow_common.errors`: a payload that cannot be decoded is an
`InvalidMessage` (DLQ); a datum the producer cannot encode is a bug (`E_ENCODE`), never a DLQ case.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import to_parsing_canonical_form

from infiniteflow_common.errors import DecodeError, InfiniteFlowError, InvalidMessage, UnknownSchemaError

NAMESPACE = "dev.infiniteflow.events"
MARKER = b"\xc3\x01"
"""The two bytes that open every single-object-encoded message."""
HEADER_SIZE = len(MARKER) + 8
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "schemas" / "avro"

_FILE_NAME = re.compile(r"^(?P<record>[A-Z][A-Za-z0-9]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")


class SchemaCatalogError(InfiniteFlowError):
    """The schema folder itself is wrong (bad file name, duplicate fingerprint, gap in versions)."""

    code = "E_SCHEMA_CATALOG"


@dataclass(frozen=True, eq=False, slots=True)
class SchemaVersion:
    """One released version of one record, as parsed from `<record>.v<version>.avsc`."""

    record: str
    version: int
    path: Path
    definition: Mapping[str, Any]
    """The file's JSON as written (docs, defaults and logical types included)."""
    parsed: Any
    """fastavro's parsed form, what its reader and writer take."""
    canonical_form: str
    fingerprint: bytes
    """8 bytes, CRC-64-AVRO of `canonical_form`, little-endian as on the wire."""

    @property
    def full_name(self) -> str:
        return f"{NAMESPACE}.{self.record}"

    @property
    def header(self) -> bytes:
        """The 10 bytes that precede every body written with this version."""
        return MARKER + self.fingerprint

    def __repr__(self) -> str:
        return f"SchemaVersion({self.record} v{self.version}, fingerprint={self.fingerprint.hex()})"


def schema_fingerprint(canonical_form: str) -> bytes:
    """CRC-64-AVRO of a Parsing Canonical Form, as the 8 little-endian bytes the wire carries."""
    return bytes.fromhex(_fingerprint(canonical_form, "CRC-64-AVRO"))


def _load_version(path: Path) -> SchemaVersion:
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise SchemaCatalogError(f"{path}: schema files are named '<Record>.v<N>.avsc'")
    record, version = match["record"], int(match["version"])
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaCatalogError(f"{path}: cannot read schema: {exc}") from exc
    if not isinstance(definition, dict) or definition.get("type") != "record":
        raise SchemaCatalogError(f"{path}: the top level must be a record")
    if definition.get("name") != record or definition.get("namespace") != NAMESPACE:
        raise SchemaCatalogError(f"{path}: the record must be named {NAMESPACE}.{record}")
    try:
        # A fresh named-schema table per file: each file is self-contained (see schemas/README.md).
        parsed = parse_schema(definition, named_schemas={})
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise SchemaCatalogError(f"{path}: invalid Avro schema: {exc}") from exc
    canonical_form = to_parsing_canonical_form(parsed)
    return SchemaVersion(
        record=record,
        version=version,
        path=path,
        definition=definition,
        parsed=parsed,
        canonical_form=canonical_form,
        fingerprint=schema_fingerprint(canonical_form),
    )


class SchemaCatalog:
    """Every released schema version, indexed by record name and by fingerprint."""

    def __init__(self, root: Path, versions: list[SchemaVersion]) -> None:
        self.root = root
        by_record: dict[str, list[SchemaVersion]] = {}
        by_fingerprint: dict[bytes, SchemaVersion] = {}
        for version in versions:
            clash = by_fingerprint.get(version.fingerprint)
            if clash is not None:
                # Same canonical form twice (e.g. a doc-only "new version"): the wire cannot tell them apart.
                raise SchemaCatalogError(
                    f"{version.path.name} and {clash.path.name} have the same fingerprint "
                    f"{version.fingerprint.hex()}; a new version must change the schema's shape"
                )
            by_fingerprint[version.fingerprint] = version
            by_record.setdefault(version.record, []).append(version)
        for record, found in by_record.items():
            found.sort(key=lambda v: v.version)
            numbers = [v.version for v in found]
            if numbers != list(range(1, len(found) + 1)):
                raise SchemaCatalogError(f"{record}: versions must run 1..N without gaps, found {numbers}")
        self._by_record = {record: tuple(found) for record, found in sorted(by_record.items())}
        self._by_fingerprint = by_fingerprint

    @classmethod
    def load(cls, root: Path | None = None) -> SchemaCatalog:
        """Parse every `<Record>.v<N>.avsc` under `root` (default: the repository's `schemas/avro`)."""
        root = DEFAULT_ROOT if root is None else root
        if not root.is_dir():
            raise SchemaCatalogError(f"schema folder {root} does not exist")
        return cls(root, [_load_version(path) for path in sorted(root.glob("*.avsc"))])

    @property
    def records(self) -> list[str]:
        """Names of all records, sorted."""
        return list(self._by_record)

    def versions(self, record: str) -> list[SchemaVersion]:
        """All versions of `record`, oldest first."""
        return list(self._versions(record))

    def latest(self, record: str) -> SchemaVersion:
        """The newest version of `record`: what producers write by default and every reader resolves to."""
        return self._versions(record)[-1]

    def get(self, record: str, version: int) -> SchemaVersion:
        """One specific version of `record`."""
        found = self._versions(record)
        if not 1 <= version <= len(found):
            raise SchemaCatalogError(f"{record} has no version {version} (latest is {len(found)})")
        return found[version - 1]

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        """The version whose canonical form has this 8-byte little-endian fingerprint, if any."""
        return self._by_fingerprint.get(bytes(fingerprint))

    def encode(self, record: str, datum: Mapping[str, Any], *, version: int | None = None) -> bytes:
        """Single-object-encode `datum` with `record`'s newest version (or `version`).

        The datum must give every field of that version (nullable ones included) and nothing else, and
        must read back (e.g. uuid fields hold UUIDs). A datum that does not fit raises `InfiniteFlowError`
        with code `E_ENCODE`: a bug in the producer, never to be treated as a bad *input* message.
        """
        writer = self.latest(record) if version is None else self.get(record, version)
        buffer = io.BytesIO()
        buffer.write(writer.header)
        try:
            # strict: every field given, no unknown keys, so a misspelt optional field cannot become null.
            # No tuple notation: a model's tuple in a nullable array field is the array, not (branch, value).
            schemaless_writer(buffer, writer.parsed, datum, strict=True, disable_tuple_notation=True)
            # fastavro writes some bad values without complaint (a uuid field holding "abc"); reading the
            # body back (~20 µs) makes sure no producer emits what its own consumers would dead-letter.
            buffer.seek(len(writer.header))
            schemaless_reader(buffer, writer.parsed, None)
        except Exception as exc:  # fastavro raises several types for a bad datum
            raise InfiniteFlowError(
                f"cannot encode {record} v{writer.version}: {type(exc).__name__}: {exc}", code="E_ENCODE"
            ) from exc
        return buffer.getvalue()

    def decode(self, payload: bytes, record: str | None = None) -> tuple[str, dict[str, Any]]:
        """Decode one single-object-encoded message; return (record name, datum in the newest reader shape).

        Raises `DecodeError` (no marker, too short, body does not match the writer schema, trailing
        bytes), `UnknownSchemaError` (fingerprint not in the catalog) or `InvalidMessage` with code
        `E_UNEXPECTED_RECORD` (the writer schema is another record than `record`). All three are
        permanent, so the consumer dead-letters the message.
        """
        if record is not None:
            self._versions(record)  # an unknown expected record is the caller's bug, not the message's
        view = memoryview(payload)
        if len(view) < HEADER_SIZE or view[: len(MARKER)] != MARKER:
            raise DecodeError(
                f"not an Avro single-object message: expected marker {MARKER.hex()} and an 8-byte "
                f"fingerprint, got {len(view)} bytes starting {bytes(view[:HEADER_SIZE]).hex() or 'nothing'}"
            )
        fingerprint = bytes(view[len(MARKER) : HEADER_SIZE])
        writer = self._by_fingerprint.get(fingerprint)
        if writer is None:
            raise UnknownSchemaError(
                f"unknown writer schema fingerprint {fingerprint.hex()} (CRC-64-AVRO, little-endian); "
                "it is not among the schemas this build knows"
            )
        if record is not None and writer.record != record:
            raise InvalidMessage(
                f"expected a {record} message, got {writer.record} v{writer.version}",
                code="E_UNEXPECTED_RECORD",
            )
        reader = self.latest(writer.record)
        body = io.BytesIO(view[HEADER_SIZE:])
        try:
            datum = schemaless_reader(body, writer.parsed, None if reader is writer else reader.parsed)
        except Exception as exc:  # truncation, bad varints, enum index out of range, resolution errors
            raise DecodeError(
                f"{writer.record} v{writer.version} body does not decode: {type(exc).__name__}: {exc}"
            ) from exc
        trailing = len(view) - HEADER_SIZE - body.tell()
        if trailing:
            raise DecodeError(f"{writer.record} v{writer.version} body has {trailing} trailing bytes")
        if not isinstance(datum, dict):
            raise DecodeError(f"{writer.record} v{writer.version} body is not a record")
        return writer.record, datum

    def example(self, record: str, version: int | None = None) -> dict[str, Any]:
        """The checked-in example datum of a version, from `<root>/../examples/<Record>.v<N>.json`."""
        schema = self.latest(record) if version is None else self.get(record, version)
        path = self.root.parent / "examples" / f"{record}.v{schema.version}.json"
        value = json.loads(path.read_text(encoding="utf-8"))
        datum = json_to_datum(schema.definition, value)
        if not isinstance(datum, dict):
            raise SchemaCatalogError(f"{path}: an example must be a JSON object")
        return datum

    def _versions(self, record: str) -> tuple[SchemaVersion, ...]:
        try:
            return self._by_record[record]
        except KeyError:
            raise SchemaCatalogError(
                f"unknown record {record!r}; known: {', '.join(self._by_record)}", code="E_UNKNOWN_RECORD"
            ) from None


def json_to_datum(schema: Any, value: Any) -> Any:
    """Turn an example's plain JSON into a datum fastavro writes.

    Plain JSON as a producer would pass it (unions unwrapped, timestamps as epoch milliseconds, uuids as
    strings); the one thing JSON cannot hold is `bytes`, written as in Avro's JSON encoding: a string
    whose code points U+0000..U+00FF are the bytes.
    """
    if isinstance(schema, str) or value is None:
        return value.encode("latin-1") if schema == "bytes" and isinstance(value, str) else value
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        return json_to_datum(branches[0], value) if len(branches) == 1 else value
    kind = schema.get("type")
    if kind == "record":
        by_name = {field["name"]: field["type"] for field in schema["fields"]}
        return {name: json_to_datum(by_name.get(name, "null"), item) for name, item in value.items()}
    if kind == "array":
        return [json_to_datum(schema["items"], item) for item in value]
    if kind == "map":
        return {name: json_to_datum(schema["values"], item) for name, item in value.items()}
    if kind in ("bytes", "fixed") and isinstance(value, str):
        return value.encode("latin-1")
    return value
