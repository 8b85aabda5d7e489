"""A finished job reports its timing: rates, frame counts, durations, audio drift, scene cuts, VFR."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest

from infiniteflow_common.events import JobSplit
from infiniteflow_common.reports import timing_view
from services.muxer.assemble import MuxError, OutputTiming, timing_of
from services.muxer.report import timing_report


def _plan(**overrides: Any) -> JobSplit:
    values: dict[str, Any] = {
        "job_id": uuid.UUID(int=1), "chunk_count": 2, "source_frame_count": 90, "in_fps_num": 30000,
        "in_fps_den": 1001, "out_fps_num": 60000, "out_fps_den": 1001, "out_frame_count": 180,
        "scene_cuts": (31, 62), "vfr_converted": False, "split_at": datetime(2026, 11, 30, tzinfo=UTC),
    }  # fmt: skip
    return JobSplit(**(values | overrides))


PLAN = _plan()


def test_the_output_is_read_from_ffprobe_streams() -> None:
    measured = timing_of(
        {
            "streams": [
                {
                    "codec_type": "video",
                    "nb_read_packets": "180",
                    "start_time": "0.000000",
                    "duration": "3.003000",
                },
                {"codec_type": "audio", "start_time": "0.000000", "duration": "3.008000"},
                {"codec_type": "audio", "start_time": "0.000000", "duration": "9.0"},
            ]
        }
    )
    assert measured == OutputTiming(180, 0.0, 3.003, 0.0, 3.008)
    assert measured.drift_s == pytest.approx(0.005)


def test_an_output_without_audio_has_no_drift_and_one_without_video_is_an_error() -> None:
    silent = timing_of({"streams": [{"codec_type": "video", "nb_frames": "12", "duration": "0.5"}]})
    assert (silent.video_frames, silent.audio_duration_s, silent.drift_s) == (12, None, None)
    with pytest.raises(MuxError) as error:
        timing_of({"streams": [{"codec_type": "audio", "duration": "1"}]})
    assert error.value.code == "E_MUX_NO_VIDEO"


def test_the_report_puts_the_plan_next_to_the_measured_output() -> None:
    report = timing_report(PLAN, input_vfr=False, measured=OutputTiming(180, 0.0, 3.003, 0.0, 2.99))
    assert report.in_duration_s == pytest.approx(3.003)
    assert report.scene_cut_frames == (31, 62)
    assert report.scene_cut_times_s == pytest.approx((31 * 1001 / 30000, 62 * 1001 / 30000))
    assert report.audio_video_drift_s == pytest.approx(-0.013)
    view = timing_view(
        report, in_rate=Fraction(30000, 1001), out_rate=Fraction(60000, 1001), in_frames=90
    ).model_dump(mode="json")
    assert view["input"] == {
        "fps": "30000/1001",
        "frame_count": 90,
        "duration_s": report.in_duration_s,
        "vfr": False,
        "vfr_converted": False,
    }
    assert view["output"] == {"fps": "60000/1001", "frame_count": 180, "duration_s": 3.003}
    assert view["audio"]["drift_frames"] == pytest.approx(-0.013 * 60000 / 1001, abs=1e-3)
    assert view["scene_cuts"][0] == {"frame": 31, "time_s": pytest.approx(1.034367)}


def test_a_vfr_input_made_constant_says_so_and_an_integer_rate_keeps_its_denominator() -> None:
    plan = _plan(in_fps_num=25, in_fps_den=1, vfr_converted=True, scene_cuts=())
    report = timing_report(plan, input_vfr=True, measured=OutputTiming(180, 0.0, 3.6, None, None))
    view = timing_view(report, in_rate=Fraction(25), out_rate=Fraction(50), in_frames=90).model_dump(
        mode="json"
    )
    assert view["input"]["fps"] == "25/1"
    assert (view["input"]["vfr"], view["input"]["vfr_converted"]) == (True, True)
    assert view["audio"] is None
    assert view["scene_cuts"] == []
