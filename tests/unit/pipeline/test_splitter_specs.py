"""The splitter sizes chunks by work and tells each worker exactly which frames of the pinned source to read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.events import (
    ChunkReady,
    JobSplit,
    VideoEncoding,
    VideoUploaded,
    decode_event,
    encode_event,
)
from services.splitter.analysis import Analysis, AnalysisSettings, analyse
from services.splitter.plan import frames_for_work, plan_job
from services.splitter.specs import chunk_specs, plan_event
from tests.support.clips import panning_clip

CATALOG = SchemaCatalog.load()
ENCODING = VideoEncoding(
    encoder="libx265", pix_fmt="yuv420p10le", crf=20, preset="medium", color_transfer="smpte2084",
    mastering_display=("17/50", "7/10", "3/20", "3/50", "17/25", "8/25", "3127/10000", "329/1000", "1000", "1/200"),
    max_cll=1000, max_fall=400,
)  # fmt: skip
STARTED = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
SPLIT_AT = datetime(2026, 11, 30, 21, 1, tzinfo=UTC)


def _work(width: int, height: int, in_rate: Fraction, out_rate: Fraction, **overrides: Any) -> int:
    values: dict[str, Any] = {
        "width": width, "height": height, "in_rate": in_rate, "out_rate": out_rate,
        "engine_pixels_per_s": 2e6, "target_s": 60.0, "min_frames": 8, "max_frames": 20_000,
    }  # fmt: skip
    return frames_for_work(**(values | overrides))


def test_a_chunk_is_about_the_target_seconds_of_engine_work() -> None:
    # 100×100 px, ×2: one interpolated frame of 10 000 px per source frame; 1 Mpx/s for 10 s
    assert _work(100, 100, Fraction(30), Fraction(60), engine_pixels_per_s=1e6, target_s=10) == 1000
    # 24 → 60 fps adds 1.5 frames per source frame on average
    assert _work(100, 100, Fraction(24), Fraction(60), engine_pixels_per_s=1.5e6, target_s=10) == 1000


def test_a_long_clip_of_tiny_frames_becomes_a_handful_of_chunks() -> None:
    frames = 10 * 60 * 30  # ten minutes at 30 fps
    size = _work(160, 90, Fraction(30), Fraction(60))
    plan = plan_job(frames, Fraction(30), Fraction(60), [], size)
    assert 2 <= len(plan.chunks) <= 4


def test_a_4k_x8_chunk_stays_short_and_the_bounds_hold() -> None:
    hd_x2 = _work(1920, 1080, Fraction(30), Fraction(60), engine_pixels_per_s=400e6)
    uhd_x8 = _work(3840, 2160, Fraction(30), Fraction(240), engine_pixels_per_s=400e6)
    assert uhd_x8 == int(60 * 400e6 / (3840 * 2160 * 7))
    assert uhd_x8 * 28 <= hd_x2 <= uhd_x8 * 29, "four times the pixels, seven times the frames"
    assert _work(3840, 2160, Fraction(30), Fraction(240), engine_pixels_per_s=0.6e6) == 8, "at least min"
    assert _work(16, 16, Fraction(30), Fraction(60), engine_pixels_per_s=1e9) == 20_000, "at most max"


def test_a_copy_only_job_still_gets_more_than_one_chunk() -> None:
    same = _work(640, 360, Fraction(30), Fraction(30))
    assert same == int(60 * 2e6 / (640 * 360 / 10)), "a tenth of a frame of work per frame is assumed"
    assert same < 20_000


def _event() -> VideoUploaded:
    datum = CATALOG.example("VideoUploaded")
    return VideoUploaded.from_avro(datum | {"version_id": "v-7", "etag": "abc123"})


def _analysis(**overrides: Any) -> Analysis:
    values: dict[str, Any] = {
        "rate": Fraction(25), "source_of": list(range(10)), "scene_starts": [6], "vfr_converted": False,
        "frame_pts": [1000 + 512 * i for i in range(10)], "stream_time_base": Fraction(1, 12800),
        "width": 64, "height": 48, "pix_fmt": "yuv420p10le", "keyframes": (0, 5),
    }  # fmt: skip
    return Analysis(**(values | overrides))


def _round_trip(event: ChunkReady | JobSplit) -> None:
    """The announcement survives the wire exactly (tuples in nullable arrays included)."""
    assert decode_event(CATALOG, encode_event(CATALOG, event), type(event)) == event


def test_each_chunk_reads_its_frames_of_the_pinned_source_by_timestamp() -> None:
    analysis = _analysis()
    plan = plan_job(10, Fraction(25), Fraction(50), analysis.scene_starts, 4)
    specs = chunk_specs(_event(), plan, analysis, ENCODING, model="auto")
    assert [(s.first_frame, s.frame_count) for s in specs] == [(0, 4), (3, 3), (6, 4)]
    assert [s.source.frame_indices for s in specs if s.source] == [(0, 1, 2, 3), (3, 4, 5), (6, 7, 8, 9)]
    assert [s.source.frame_pts for s in specs if s.source] == [
        (1000, 1512, 2024, 2536), (2536, 3048, 3560), (4072, 4584, 5096, 5608),
    ]  # fmt: skip
    # each decode begins at the last keyframe (decoded frames 0 and 5) at or before the chunk's first frame
    assert [s.source.decode_start_pts for s in specs if s.source] == [1000, 1000, 3560]
    for spec, chunk in zip(specs, plan.chunks, strict=True):
        source = spec.source
        assert source is not None
        assert (source.bucket, source.key, source.version_id, source.etag) == (
            "incoming", _event().key, "v-7", "abc123",
        )  # fmt: skip
        assert (source.time_base_num, source.time_base_den) == (1, 12800)
        assert (spec.out_fps_num, spec.out_fps_den) == (50, 1)
        assert spec.encoding == ENCODING
        assert (spec.width, spec.height, spec.pix_fmt, spec.chunk_count) == (64, 48, "yuv420p10le", 3)
        assert [(t.source_offset, Fraction(t.t)) for t in spec.timesteps] == [
            (s.source_offset, s.t) for s in chunk.slots
        ]
        assert spec.first_output_frame == chunk.first_output_frame
        _round_trip(spec)
    assert specs[0].shares_last_frame
    assert specs[1].ends_scene, "the chunk before the cut at 6"


def test_cfr_converted_input_repeats_the_frames_the_plan_repeats() -> None:
    # a frame every 1/25 s, then every 2/25 s: made constant, the later frames are each planned twice
    decoded_pts = [0, 40, 80, 160, 240]
    analysis = _analysis(
        source_of=[0, 1, 2, 2, 3, 3, 4, 4], scene_starts=[], vfr_converted=True, frame_pts=decoded_pts,
        stream_time_base=Fraction(1, 1000),
    )  # fmt: skip
    plan = plan_job(8, Fraction(25), Fraction(50), [], 5)
    specs = chunk_specs(_event(), plan, analysis, ENCODING, model="auto")
    sources = [s.source for s in specs]
    assert [s.frame_indices for s in sources if s] == [(0, 1, 2, 2, 3), (3, 3, 4, 4)]
    assert [s.frame_pts for s in sources if s] == [(0, 40, 80, 80, 160), (160, 160, 240, 240)]
    assert [s.decode_start_pts for s in sources if s] == [0, 0]
    announced = plan_event(uuid.UUID(int=9), plan, analysis, ENCODING, started_at=STARTED, split_at=SPLIT_AT)
    assert announced.vfr_converted
    assert not announced.vfr_kept
    assert (announced.source_frame_count, announced.planned_frame_count, announced.out_frame_count) == (
        8,
        8,
        16,
    )
    for spec in specs:
        _round_trip(spec)


def test_a_source_without_usable_timestamps_is_read_by_counting_frames() -> None:
    analysis = _analysis(frame_pts=[None] * 10, stream_time_base=Fraction(1, 25))
    plan = plan_job(10, Fraction(25), Fraction(50), [6], 4)
    specs = chunk_specs(_event(), plan, analysis, ENCODING, model="rife-4.6")
    assert all(s.source is not None and s.source.frame_pts is None for s in specs)
    assert [s.source.frame_indices for s in specs if s.source][1] == (3, 4, 5)
    assert {s.model for s in specs} == {"rife-4.6"}


def test_the_plan_event_carries_the_rates_cuts_and_encoding() -> None:
    analysis = _analysis()
    plan = plan_job(10, Fraction(25), Fraction(50), analysis.scene_starts, 4)
    announced = plan_event(uuid.UUID(int=9), plan, analysis, ENCODING, started_at=STARTED, split_at=SPLIT_AT)
    assert (announced.chunk_count, announced.source_frame_count, announced.out_frame_count) == (3, 10, 20)
    assert (announced.in_fps_num, announced.in_fps_den, announced.out_fps_num, announced.out_fps_den) == (
        25,
        1,
        50,
        1,
    )
    assert announced.scene_cuts == (6,)
    assert (announced.vfr_kept, announced.vfr_pts, announced.duplicates_skipped) == (False, None, 0)
    assert announced.encoding == ENCODING
    assert (announced.split_started_at, announced.split_at) == (STARTED, SPLIT_AT)
    _round_trip(announced)


def test_kept_variable_timing_and_skipped_duplicates_are_in_the_plan_event() -> None:
    vfr = _analysis(pts=[0, 33, 67, 100, 133, 200, 267, 333, 400, 467], time_base=Fraction(1, 1000))
    plan = plan_job(10, Fraction(25), Fraction(50), vfr.scene_starts, 4)
    announced = plan_event(uuid.UUID(int=9), plan, vfr, ENCODING, started_at=STARTED, split_at=SPLIT_AT)
    assert announced.vfr_kept
    assert (announced.vfr_time_base_num, announced.vfr_time_base_den) == (1, 1000)
    assert announced.vfr_pts == (0, 33, 67, 100, 133, 200, 267, 333, 400, 467)
    _round_trip(announced)

    # 12 input frames, 2 of them duplicates: 10 planned at their input positions
    positions = [Fraction(p) for p in (0, 1, 2, 4, 5, 6, 7, 9, 10, 11)]
    deduped = _analysis(
        source_of=[0, 1, 2, 4, 5, 6, 7, 9, 10, 11], positions=positions, input_frames=12,
        frame_pts=[1000 + 512 * i for i in range(12)],
    )  # fmt: skip
    plan = plan_job(
        10, Fraction(25), Fraction(50), deduped.scene_starts, 4, positions=positions, input_frames=12
    )
    announced = plan_event(uuid.UUID(int=9), plan, deduped, ENCODING, started_at=STARTED, split_at=SPLIT_AT)
    assert (announced.source_frame_count, announced.planned_frame_count, announced.duplicates_skipped) == (
        12,
        10,
        2,
    )
    assert announced.scene_cuts == (7,), "the cut as the user counts frames: input frame 7"
    assert announced.out_frame_count == 24, "the output covers the whole input"
    specs = chunk_specs(_event(), plan, deduped, ENCODING, model="auto")
    assert specs[0].source is not None
    assert specs[0].source.frame_indices == (0, 1, 2, 4)
    assert specs[0].source.frame_pts == (1000, 1512, 2024, 3048), "the decoded frames' own timestamps"


@pytest.mark.ffmpeg
def test_the_analysis_pass_reads_timestamps_size_format_and_cuts(tmp_path: Path) -> None:
    clip = panning_clip(tmp_path / "clip.mp4", width=96, height=64, rate=Fraction(25), seconds=1.6, cut_at=20)
    settings = AnalysisSettings(
        scene_threshold=27.0, scene_min_frames=8, scene_width=96, dedupe_threshold=1.0
    )
    analysis = analyse(clip.path, 25, 1, settings)
    assert (analysis.width, analysis.height, analysis.pix_fmt) == (96, 64, "yuv420p")
    assert analysis.rate == Fraction(25)
    assert analysis.source_of == list(range(clip.frames))
    assert analysis.scene_starts == [20]
    assert not analysis.vfr_converted
    assert analysis.pts is None, "constant input is planned on its frame grid"
    ticks = [Fraction(p or 0) * analysis.stream_time_base for p in analysis.frame_pts]
    assert [t - ticks[0] for t in ticks] == [Fraction(i, 25) for i in range(clip.frames)]


def test_a_chunk_before_the_first_keyframe_or_without_timestamps_is_decoded_from_the_start() -> None:
    plan = plan_job(10, Fraction(25), Fraction(50), [6], 4)
    late_key = chunk_specs(_event(), plan, _analysis(keyframes=(5,)), ENCODING, model="auto")
    untimed = chunk_specs(_event(), plan, _analysis(frame_pts=[None] * 10), ENCODING, model="auto")

    assert [s.source.decode_start_pts for s in late_key if s.source] == [None, None, 3560]
    assert [s.source.decode_start_pts for s in untimed if s.source] == [None, None, None]
    assert [s.source.frame_pts for s in untimed if s.source] == [None, None, None]
