"""The job's RIFE `model` and the per-chunk model report: released messages still read, new ones carry them."""

from __future__ import annotations

import pytest

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.events import JobCompleted, JobFailed, VideoUploaded, decode_event

from .support import golden_path, job_params_fields, parse_golden


@pytest.mark.parametrize(
    ("record", "old", "model"), [("VideoUploaded", 1, VideoUploaded), ("JobFailed", 1, JobFailed)]
)
def test_jobs_written_before_models_existed_read_as_auto(
    catalog: SchemaCatalog, record: str, old: int, model: type[VideoUploaded | JobFailed]
) -> None:
    released = parse_golden(golden_path(catalog.get(record, old)).read_text("ascii"))
    event = decode_event(catalog, released, model)
    assert event.params is not None
    assert event.params.model == "auto"


def test_a_v2_job_completed_reads_with_no_model_report(catalog: SchemaCatalog) -> None:
    released = parse_golden(golden_path(catalog.get("JobCompleted", 2)).read_text("ascii"))
    event = decode_event(catalog, released, JobCompleted)
    assert event.params.model == "auto"
    assert event.quality is not None
    assert event.quality.model_chunks == {}
    assert event.quality.chunk_models == ()


def test_the_v3_report_names_each_chunks_model_and_both_scores(catalog: SchemaCatalog) -> None:
    event = JobCompleted.from_avro(catalog.example("JobCompleted", 3))
    decoded = decode_event(catalog, catalog.encode("JobCompleted", event.to_avro()), JobCompleted)
    assert decoded == event
    assert decoded.quality is not None
    checked = decoded.quality.chunk_models[0]
    assert (checked.model, checked.chosen_by) == ("hdv3", "check")
    assert set(checked.scores) == {"hdv3", "v4.25"}
    assert decoded.quality.model_chunks == {"hdv3": 1, "v4.25": 2}


@pytest.mark.parametrize(("record", "first"), [("VideoUploaded", 2), ("JobCompleted", 3), ("JobFailed", 2)])
def test_the_model_arrived_in_one_version_and_stays_in_every_later_one(
    catalog: SchemaCatalog, record: str, first: int
) -> None:
    for version in catalog.versions(record):
        assert ("model" in job_params_fields(version.definition)) == (version.version >= first), version
