"""The typed JSONB column: what a row stores, and that older stored shapes and NULL still read."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import Column, Integer, MetaData, Table, insert
from sqlalchemy.dialects import postgresql

from infiniteflow_common.pydantic_json import PydanticJSON

PG = postgresql.dialect()  # type: ignore[no-untyped-call]


class Options(BaseModel):
    codec: str
    crf: int | None = None
    container: str = "mp4"


def _renamed_encoder(stored: dict[str, Any]) -> dict[str, Any]:
    """An older row called the codec `encoder`."""
    if "encoder" in stored:
        stored = {**stored, "codec": stored["encoder"]}
        del stored["encoder"]
    return stored


def test_a_model_round_trips_through_its_stored_json() -> None:
    column = PydanticJSON(Options)
    stored = column.process_bind_param(Options(codec="hevc", crf=20), PG)
    assert stored == {"codec": "hevc", "crf": 20, "container": "mp4"}
    assert column.process_result_value(stored, PG) == Options(codec="hevc", crf=20)


def test_a_row_written_before_typing_reads_with_defaults_and_upgrade() -> None:
    column = PydanticJSON(Options, upgrade=_renamed_encoder)
    assert column.process_result_value({"encoder": "h264"}, PG) == Options(codec="h264")


def test_none_is_sql_null_both_ways() -> None:
    column = PydanticJSON(Options)
    assert column.process_bind_param(None, PG) is None
    assert column.process_result_value(None, PG) is None
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("o", column))
    compiled = insert(table).values(id=1, o=None).compile(dialect=PG)
    # none_as_null: the parameter is an SQL NULL, not the JSON text 'null'.
    assert compiled.construct_params()["o"] is None


def test_a_dict_is_validated_before_it_is_stored() -> None:
    column = PydanticJSON(Options)
    assert column.process_bind_param({"codec": "av1"}, PG) == {
        "codec": "av1",
        "crf": None,
        "container": "mp4",
    }
    with pytest.raises(ValidationError):
        column.process_bind_param({"crf": 20}, PG)


class Rejected(BaseModel):
    requested: dict[str, str]


def test_a_column_with_alternatives_reads_each_shape_as_its_own_model() -> None:
    column = PydanticJSON(Options, alternatives=(Rejected,))
    assert column.process_result_value({"codec": "h264"}, PG) == Options(codec="h264")
    assert column.process_result_value({"requested": {"fps": "x"}}, PG) == Rejected(requested={"fps": "x"})
    assert column.process_bind_param(Rejected(requested={}), PG) == {"requested": {}}
    with pytest.raises(ValidationError):
        column.process_result_value({"crf": 20}, PG)
