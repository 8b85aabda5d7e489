"""The typed events mirror the newest schemas and survive the wire unchanged."""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.errors import InvalidMessage
from infiniteflow_common.events import (
    EVENT_MODELS,
    NESTED_MODELS,
    AvroModel,
    ChunkReady,
    DeadLetter,
    Event,
    JobCancelled,
    JobParams,
    JobSplit,
    OutputSlot,
    SourceRange,
    UploadSource,
    VideoEncoding,
    VideoUploaded,
    decode_event,
    encode_event,
)

from .support import golden_path, is_nullable, named_types, parse_golden

CATALOG = SchemaCatalog.load()


def avro_record(record: str) -> dict[str, Any]:
    """The newest definition of a top-level or nested record."""
    if record in CATALOG.records:
        return dict(CATALOG.latest(record).definition)
    for top in CATALOG.records:
        for named in named_types(CATALOG.latest(top).definition):
            if named["name"] == record:
                return named
    raise LookupError(record)


def model_nullable(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation) or annotation is types.NoneType


def test_there_is_one_event_model_per_record() -> None:
    assert sorted(model.RECORD for model in EVENT_MODELS) == CATALOG.records


@pytest.mark.parametrize("model", EVENT_MODELS + NESTED_MODELS, ids=lambda m: m.__name__)
def test_model_fields_match_the_newest_schema_in_name_order_and_nullability(model: type[AvroModel]) -> None:
    schema_fields = {f["name"]: is_nullable(f["type"]) for f in avro_record(model.RECORD)["fields"]}
    model_fields = {name: model_nullable(f.annotation) for name, f in model.model_fields.items()}

    assert list(model_fields) == list(schema_fields)
    assert model_fields == schema_fields


def test_upload_source_literal_matches_the_avro_enum() -> None:
    assert list(typing.get_args(UploadSource)) == avro_record("UploadSource")["symbols"]


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.__name__)
def test_the_example_round_trips_through_the_model_to_the_golden_bytes(model: type[Event]) -> None:
    event = model.from_avro(CATALOG.example(model.RECORD))

    payload = encode_event(CATALOG, event)

    assert decode_event(CATALOG, payload, model) == event
    latest = CATALOG.latest(model.RECORD)
    assert payload == parse_golden(golden_path(latest).read_text(encoding="ascii"))


def test_decode_event_refuses_a_message_of_another_record() -> None:
    payload = encode_event(CATALOG, JobSplit.from_avro(CATALOG.example("JobSplit")))

    with pytest.raises(InvalidMessage) as caught:
        decode_event(CATALOG, payload, ChunkReady)

    assert caught.value.code == "E_UNEXPECTED_RECORD"


def test_a_well_formed_message_that_breaks_the_models_rules_is_invalid() -> None:
    datum = CATALOG.example("VideoUploaded")
    datum["params"] = {**datum["params"], "multiplier": 3}
    payload = CATALOG.encode("VideoUploaded", datum)

    with pytest.raises(InvalidMessage, match=r"params\.multiplier") as caught:
        decode_event(CATALOG, payload, VideoUploaded)

    assert caught.value.code == "E_EVENT_INVALID"


def test_timestamps_must_be_timezone_aware() -> None:
    datum = CATALOG.example("JobSplit") | {"split_at": datetime(2026, 11, 23, 21, 14, 31)}

    with pytest.raises(ValidationError, match="timezone-aware"):
        JobSplit.from_avro(datum)


def test_timestamps_are_normalised_to_utc_milliseconds() -> None:
    cet = timezone(timedelta(hours=1))
    datum = CATALOG.example("JobSplit") | {"split_at": datetime(2026, 11, 23, 22, 14, 31, 402999, tzinfo=cet)}

    event = JobSplit.from_avro(datum)

    assert event.split_at == datetime(2026, 11, 23, 21, 14, 31, 402000, tzinfo=UTC)
    assert event.split_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("multiplier", "target_fps"),
    [(None, None), (2, "60"), (3, None), (None, "60/0"), (None, "fast")],
    ids=["neither", "both", "multiplier-3", "zero-denominator", "not-a-rate"],
)
def test_job_params_need_exactly_one_valid_rate(multiplier: int | None, target_fps: str | None) -> None:
    with pytest.raises(ValidationError):
        JobParams.model_validate(
            {
                "multiplier": multiplier,
                "target_fps": target_fps,
                "engine": "rife",
                "quality": "fast",
                "webhook_url": None,
            }
        )


def test_events_are_immutable() -> None:
    event = JobSplit.from_avro(CATALOG.example("JobSplit"))

    with pytest.raises(ValidationError):
        event.chunk_count = 9  # type: ignore[misc]


# Property tests: any valid event survives the wire exactly.
int32 = st.integers(0, 2**31 - 1)
positive = st.integers(1, 2**31 - 1)
long = st.integers(0, 2**63 - 1)
instant = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
text = st.text(max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False)

signed_long = st.integers(-(2**63), 2**63 - 1)
# Nullable arrays are tuples in the models: the codec must write them as arrays, not as union notation.
encodings = st.builds(
    VideoEncoding,
    encoder=text,
    pix_fmt=text,
    crf=st.none() | st.integers(0, 63),
    bitrate=st.none() | long,
    preset=st.none() | text,
    color_range=st.none() | text,
    color_space=st.none() | text,
    color_transfer=st.none() | text,
    color_primaries=st.none() | text,
    mastering_display=st.none() | st.lists(text, min_size=2, max_size=10).map(tuple),
    max_cll=st.none() | int32,
    max_fall=st.none() | int32,
)
source_ranges = st.builds(
    SourceRange,
    bucket=text,
    key=text,
    version_id=st.none() | text,
    etag=text,
    size_bytes=long,
    time_base_num=positive,
    time_base_den=positive,
    frame_pts=st.none() | st.lists(signed_long, max_size=12).map(tuple),
    frame_indices=st.lists(long, max_size=12).map(tuple),
)

job_splits = st.builds(
    JobSplit,
    job_id=st.uuids(),
    chunk_count=positive,
    source_frame_count=long,
    in_fps_num=positive,
    in_fps_den=positive,
    out_fps_num=positive,
    out_fps_den=positive,
    out_frame_count=long,
    scene_cuts=st.lists(long, max_size=20).map(lambda cuts: tuple(sorted(cuts))),
    vfr_converted=st.booleans(),
    split_at=instant,
    vfr_kept=st.booleans(),
    vfr_pts=st.none() | st.lists(signed_long, min_size=2, max_size=12).map(tuple),
    encoding=st.none() | encodings,
    split_started_at=st.none() | instant,
)
chunk_readies = st.builds(
    ChunkReady,
    job_id=st.uuids(),
    chunk_index=int32,
    chunk_count=positive,
    object_key=text,
    first_frame=long,
    frame_count=positive,
    first_output_frame=long,
    shares_last_frame=st.booleans(),
    ends_scene=st.booleans(),
    timesteps=st.lists(
        st.builds(OutputSlot, source_offset=int32, t=st.floats(0.0, 1.0, exclude_max=True)), max_size=16
    ).map(tuple),
    engine=st.sampled_from(["rife", "flow"]),
    quality=text,
    width=positive,
    height=positive,
    pix_fmt=text,
    attempt=positive,
    source=st.none() | source_ranges,
    encoding=st.none() | encodings,
    out_fps_num=int32,
    out_fps_den=positive,
)
dead_letters = st.builds(
    DeadLetter,
    origin_topic=text,
    origin_partition=int32,
    origin_offset=long,
    origin_timestamp=st.none() | instant,
    key=st.none() | st.binary(max_size=40),
    payload=st.binary(max_size=200),
    headers=st.dictionaries(text, text, max_size=5),
    error_code=text,
    reason=text,
    service=text,
    attempts=int32,
    failed_at=instant,
    job_id=st.none() | st.uuids(),
)

job_cancels = st.builds(
    JobCancelled,
    job_id=st.uuids(),
    tenant_id=st.none() | text,
    bucket=st.none() | text,
    key=st.none() | text,
    webhook_url=st.none() | text,
    previous_status=st.none() | st.sampled_from(["pending", "splitting", "interpolating", "muxing"]),
    progress=st.integers(0, 100),
    cancelled_at=instant,
)


@settings(max_examples=150, deadline=None)
@given(event=st.one_of(job_splits, chunk_readies, dead_letters, job_cancels))
def test_any_valid_event_round_trips_through_avro(event: Event) -> None:
    payload = encode_event(CATALOG, event)

    assert decode_event(CATALOG, payload, type(event)) == event


@settings(max_examples=100, deadline=None)
@given(event=chunk_readies, cut=st.integers(1, 10))
def test_a_cut_short_message_never_decodes_to_an_event(event: ChunkReady, cut: int) -> None:
    payload = encode_event(CATALOG, event)

    with pytest.raises(InvalidMessage):
        decode_event(CATALOG, payload[: max(0, len(payload) - cut)], ChunkReady)
