"""The job and chunk rows' typed JSON columns read every shape earlier releases stored."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql

from infiniteflow_common.db import Chunk, Job
from infiniteflow_common.domain import JobResult, RequestedParams
from infiniteflow_common.events import ChunkReady, JobParams, JobSplit, MediaProbe, VideoUploaded

PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _read(table: type[Job] | type[Chunk], column: str, stored: dict[str, Any] | None) -> Any:
    return table.__table__.c[column].type.process_result_value(stored, PG)  # type: ignore[attr-defined]


def _write(table: type[Job] | type[Chunk], column: str, value: Any) -> Any:
    return table.__table__.c[column].type.process_bind_param(value, PG)  # type: ignore[attr-defined]


def test_params_stored_before_model_and_priority_read_with_their_defaults() -> None:
    stored = {"multiplier": 2, "target_fps": None, "engine": "flow", "quality": "fast", "webhook_url": None}
    params = _read(Job, "params", stored)
    assert isinstance(params, JobParams)
    assert (params.multiplier, params.model, params.priority) == (2, "auto", 0)


def test_params_that_did_not_parse_read_as_what_was_requested() -> None:
    stored = {"requested": {"multiplier": "3"}}
    assert _read(Job, "params", stored) == RequestedParams(requested={"multiplier": "3"})
    assert _write(Job, "params", RequestedParams(requested={"multiplier": "3"})) == stored
    # a row inserted without parameters holds `{}`
    assert _read(Job, "params", {}) == RequestedParams()


def test_a_job_rejected_at_ingest_has_no_job_params() -> None:
    job = Job(source="api", source_bucket="b", source_key="k", source_etag="e")
    assert job.params == RequestedParams()
    assert job.job_params is None


PROBE_V1 = {
    "format_name": "mov,mp4,m4a,3gp,3g2,mj2", "video_codec": "h264", "width": 1920, "height": 1080,
    "pix_fmt": "yuv420p", "bit_depth": 8, "fps_num": 30, "fps_den": 1, "avg_fps_num": 30, "avg_fps_den": 1,
    "frame_count": 300, "duration_s": 10.0, "is_vfr": False, "rotation": 90, "color_range": None,
    "color_space": None, "color_transfer": None, "color_primaries": None, "has_audio": True,
    "audio_streams": 1, "subtitle_streams": 0,
}  # fmt: skip
"""A probe as ingest stored it before `start_time_s` and `packets_constant_rate`."""


def test_a_probe_stored_before_its_newer_fields_reads_with_their_defaults() -> None:
    probe = _read(Job, "probe", PROBE_V1)
    assert isinstance(probe, MediaProbe)
    assert (probe.rotation, probe.start_time_s, probe.packets_constant_rate) == (90, 0.0, None)
    assert _read(Job, "probe", None) is None


def test_a_plan_stored_before_its_newer_fields_reads_with_their_defaults() -> None:
    stored = {
        "job_id": "5f0c6c1e-8f7e-4a55-9d8e-2f4b1f1f0a01", "chunk_count": 3, "source_frame_count": 300,
        "in_fps_num": 30, "in_fps_den": 1, "out_fps_num": 60, "out_fps_den": 1, "out_frame_count": 600,
        "scene_cuts": [0, 120], "vfr_converted": False, "split_at": "2026-01-05T10:00:00.123000Z",
    }  # fmt: skip
    plan = _read(Job, "plan", stored)
    assert isinstance(plan, JobSplit)
    assert (plan.scene_cuts, plan.container, plan.encoding, plan.vfr_kept) == ((0, 120), "mp4", None, False)
    assert _write(Job, "plan", plan)["split_at"] == "2026-01-05T10:00:00.123000Z"


def test_a_chunk_spec_stored_before_its_newer_fields_reads_with_their_defaults() -> None:
    stored = {
        "job_id": "5f0c6c1e-8f7e-4a55-9d8e-2f4b1f1f0a01", "chunk_index": 1, "chunk_count": 3,
        "object_key": "work/j/1.mkv", "first_frame": 100, "frame_count": 100, "first_output_frame": 200,
        "shares_last_frame": True, "ends_scene": False, "timesteps": [{"source_offset": 0, "t": 0.5}],
        "engine": "flow", "quality": "fast", "width": 64, "height": 64, "pix_fmt": "yuv420p", "attempt": 1,
    }  # fmt: skip
    spec = _read(Chunk, "spec", stored)
    assert isinstance(spec, ChunkReady)
    assert (spec.source, spec.encoding, spec.out_fps_den, spec.model) == (None, None, 1, "auto")
    assert _write(Chunk, "spec", spec)["timesteps"] == [{"source_offset": 0, "t": 0.5}]


def test_a_result_stored_by_the_first_muxer_reads_with_the_later_fields_defaulted() -> None:
    stored = {
        "output_bucket": "output", "output_key": "j/out.mp4", "output_size_bytes": 1234, "in_fps": "30/1",
        "out_fps": "60/1", "in_frames": 300, "out_frames": 600, "duration_s": 10.0, "scene_starts": [0, 120],
        "vfr_converted": False, "mux_seconds": 1.5,
    }  # fmt: skip
    result = _read(Job, "result", stored)
    assert isinstance(result, JobResult)
    assert (result.out_fps, result.container, result.quality, result.timing, result.interpolate_s) == (
        "60/1", None, None, None, None,
    )  # fmt: skip
    assert _write(Job, "result", result) | stored == _write(Job, "result", result)


def test_a_split_request_stored_as_the_splitter_wrote_it_reads_as_its_video_uploaded() -> None:
    stored = {
        "job_id": "5f0c6c1e-8f7e-4a55-9d8e-2f4b1f1f0a01", "source": "api", "bucket": "incoming",
        "key": "tenants/t/clip.mov", "etag": "abc", "version_id": None, "size_bytes": 1234,
        "params": {"multiplier": 2, "target_fps": None, "engine": "flow", "quality": "fast", "webhook_url": None},
        "probe": PROBE_V1, "uploaded_at": "2026-01-05T10:00:00.123000Z",
    }  # fmt: skip
    request = _read(Job, "split_request", stored)
    assert isinstance(request, VideoUploaded)
    assert (request.key, request.params.multiplier, request.probe.rotation) == ("tenants/t/clip.mov", 2, 90)
    assert _read(Job, "split_request", _write(Job, "split_request", request)) == request
    assert _write(Job, "split_request", None) is None
