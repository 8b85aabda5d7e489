"""Schema evolution: whatever version wrote a message, the newest reader of its record reads it.

Runs over every version in `schemas/avro`, so adding `<Record>.v<N+1>.avsc` (with its example) adds its
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
"""(newest schema JSON, its example) -> (the next version's schema JSON, its example)."""


def evolve(tmp_path: Path, record: str, change: Evolution) -> SchemaCatalog:
    """A copy of `schemas/` plus the next version of `record` (`change` of the newest) and its example."""
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMA_ROOT, root / "avro")
    shutil.copytree(EXAMPLES, root / "examples")
    newest = SchemaCatalog.load().latest(record).version
    schema = json.loads((root / "avro" / f"{record}.v{newest}.avsc").read_text(encoding="utf-8"))
    example = json.loads((root / "examples" / f"{record}.v{newest}.json").read_text(encoding="utf-8"))
    following, following_example = change(schema, example)
    name = f"{record}.v{newest + 1}"
    (root / "avro" / f"{name}.avsc").write_text(json.dumps(following, indent=2), encoding="utf-8")
    (root / "examples" / f"{name}.json").write_text(json.dumps(following_example, indent=2), encoding="utf-8")
    return SchemaCatalog.load(root / "avro")


def add_region_and_denoise(schema: dict[str, Any], example: dict[str, Any]) -> tuple[Any, Any]:
    """A compatible next version: a new top-level field and a new nested field, both with defaults."""
    schema["fields"].append(
        {"name": "region", "type": "string", "default": "eu", "doc": "Processing region."}
    )
    params = next(f for f in schema["fields"] if f["name"] == "params")["type"]
    params["fields"].append({"name": "denoise", "type": "boolean", "default": False, "doc": "Denoise first."})
    example["region"] = "us"
    example["params"]["denoise"] = True
    return schema, example


def add_required_field(schema: dict[str, Any], example: dict[str, Any]) -> tuple[Any, Any]:
    """An incompatible next version: a new field without a default, which v1 data cannot supply."""
    schema["fields"].append({"name": "tenant", "type": "string", "doc": "Owning tenant."})
    example["tenant"] = "acme"
    return schema, example


def test_a_version_that_adds_fields_with_defaults_reads_v1_messages(tmp_path: Path) -> None:
    released = SchemaCatalog.load().latest("VideoUploaded").version
    catalog = evolve(tmp_path, "VideoUploaded", add_region_and_denoise)
    released_v1_message = parse_golden(golden_path(catalog.get("VideoUploaded", 1)).read_text("ascii"))

    record, datum = catalog.decode(released_v1_message, "VideoUploaded")

    assert record == "VideoUploaded"
    assert catalog.latest("VideoUploaded").version == released + 1
    assert datum["region"] == "eu"
    assert datum["params"]["denoise"] is False
    assert datum["key"] == "holidays/Bergwanderung 2026 – 100% echt.mp4"
    assert_every_version_readable_by_newest(catalog, "VideoUploaded")


def test_a_new_version_message_decodes_with_its_new_fields(tmp_path: Path) -> None:
    catalog = evolve(tmp_path, "VideoUploaded", add_region_and_denoise)

    _, datum = catalog.decode(catalog.encode("VideoUploaded", catalog.example("VideoUploaded")))

    assert datum["region"] == "us"
    assert datum["params"]["denoise"] is True


def test_the_old_version_can_still_be_written_explicitly(tmp_path: Path) -> None:
    catalog = evolve(tmp_path, "VideoUploaded", add_region_and_denoise)

    payload = catalog.encode("VideoUploaded", catalog.example("VideoUploaded", 1), version=1)

    assert payload[2:10] == catalog.get("VideoUploaded", 1).fingerprint
    assert catalog.decode(payload)[1]["region"] == "eu"


def test_the_check_refuses_a_version_that_v1_messages_cannot_satisfy(tmp_path: Path) -> None:
    catalog = evolve(tmp_path, "JobSplit", add_required_field)

    with pytest.raises(DecodeError, match="JobSplit v1"):
        assert_every_version_readable_by_newest(catalog, "JobSplit")
