"""Schema evolution: whatever version wrote a message, the newest reader of its record reads it.

Runs over every version in `schemas/avro`, so adding `<Record>.v2.avsc` (with its example) adds its
coverage here without touching this file. The tmp-folder tests show what the check accepts and refuses.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.errors import DecodeError

from .support import EXAMPLES, SCHEMA_ROOT, assert_every_version_readable_by_newest, golden_path, parse_golden

RECORDS = SchemaCatalog.load().records
Evolution = Callable[[dict[str, Any], dict[str, Any]], tuple[Any, Any]]
"""(v1 schema JSON, v1 example) -> (v2 schema JSON, v2 example)."""


@pytest.mark.parametrize("record", RECORDS)
def test_every_version_is_readable_by_the_newest_reader(catalog: SchemaCatalog, record: str) -> None:
    assert_every_version_readable_by_newest(catalog, record)


def evolve(tmp_path: Path, record: str, change: Evolution) -> SchemaCatalog:
    """A copy of `schemas/` with `<record>.v2` = `change(v1 schema)` and a v2 example, loaded."""
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMA_ROOT, root / "avro")
    shutil.copytree(EXAMPLES, root / "examples")
    v1 = json.loads((root / "avro" / f"{record}.v1.avsc").read_text(encoding="utf-8"))
    v1_example = json.loads((root / "examples" / f"{record}.v1.json").read_text(encoding="utf-8"))
    v2, example = change(v1, v1_example)
    (root / "avro" / f"{record}.v2.avsc").write_text(json.dumps(v2, indent=2), encoding="utf-8")
    (root / "examples" / f"{record}.v2.json").write_text(json.dumps(example, indent=2), encoding="utf-8")
    return SchemaCatalog.load(root / "avro")


def add_priority_and_denoise(schema: dict[str, Any], example: dict[str, Any]) -> tuple[Any, Any]:
    """A compatible v2: a new top-level field and a new nested field, both with defaults."""
    schema["fields"].append({"name": "priority", "type": "int", "default": 0, "doc": "Scheduling priority."})
    params = next(f for f in schema["fields"] if f["name"] == "params")["type"]
    params["fields"].append({"name": "denoise", "type": "boolean", "default": False, "doc": "Denoise first."})
    example["priority"] = 5
    example["params"]["denoise"] = True
    return schema, example


def add_required_field(schema: dict[str, Any], example: dict[str, Any]) -> tuple[Any, Any]:
    """An incompatible v2: a new field without a default, which v1 data cannot supply."""
    schema["fields"].append({"name": "tenant", "type": "string", "doc": "Owning tenant."})
    example["tenant"] = "acme"
    return schema, example


def test_a_v2_that_adds_fields_with_defaults_reads_v1_messages(tmp_path: Path) -> None:
    catalog = evolve(tmp_path, "VideoUploaded", add_priority_and_denoise)
    released_v1_message = parse_golden(golden_path(catalog.get("VideoUploaded", 1)).read_text("ascii"))

    record, datum = catalog.decode(released_v1_message, "VideoUploaded")

    assert record == "VideoUploaded"
    assert catalog.latest("VideoUploaded").version == 2
    assert datum["priority"] == 0
    assert datum["params"]["denoise"] is False
    assert datum["key"] == "holidays/Bergwanderung 2026 – 100% echt.mp4"
    assert_every_version_readable_by_newest(catalog, "VideoUploaded")


def test_a_v2_message_decodes_with_its_new_fields(tmp_path: Path) -> None:
    catalog = evolve(tmp_path, "VideoUploaded", add_priority_and_denoise)

    _, datum = catalog.decode(catalog.encode("VideoUploaded", catalog.example("VideoUploaded")))

    assert datum["priority"] == 5
    assert datum["params"]["denoise"] is True


def test_the_old_version_can_still_be_written_explicitly(tmp_path: Path) -> None:
    catalog = evolve(tmp_path, "VideoUploaded", add_priority_and_denoise)

    payload = catalog.encode("VideoUploaded", catalog.example("VideoUploaded", 1), version=1)

    assert payload[2:10] == catalog.get("VideoUploaded", 1).fingerprint
    assert catalog.decode(payload)[1]["priority"] == 0


def test_the_check_refuses_a_v2_that_v1_messages_cannot_satisfy(tmp_path: Path) -> None:
    catalog = evolve(tmp_path, "JobSplit", add_required_field)

    with pytest.raises(DecodeError, match="JobSplit v1"):
        assert_every_version_readable_by_newest(catalog, "JobSplit")
