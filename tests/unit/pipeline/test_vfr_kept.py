"""Variable-rate input keeps every source timestamp; a multiplier adds frames evenly inside each interval."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from infiniteflow_common.media import LosslessWriter
from services.muxer.assemble import OutputSpec, OutputTiming, build_command, output_times, restamp
from services.muxer.report import timing_report

# 30 fps for five frames, then 15 fps: ticks of 1/1000 s
PTS = [0, 33, 67, 100, 133, 200, 267, 333]
PLAN = {
    "in_rate": "24", "out_rate": "48", "source_frames": 8, "out_frames": 16, "scene_starts": [5],
    "vfr_converted": False, "vfr_kept": True, "time_base": "1/1000", "pts": PTS,
}  # fmt: skip


def test_each_source_frame_keeps_its_time_and_the_added_ones_split_each_interval() -> None:
    stamps = output_times(PLAN)
    assert stamps is not None
    base, pts = stamps
    assert base == Fraction(1, 2000)
    seconds = [p * base for p in pts]
    assert seconds[0::2] == [Fraction(p, 1000) for p in PTS], "every source frame at its own time"
    assert seconds[1] == Fraction(33, 2000)
    assert seconds[11] == Fraction(200 + 267, 2000), "the middle of the 15 fps interval"
    assert seconds[15] == Fraction(333 * 2 + 66, 2000), "after the last frame the last interval repeats"
    assert output_times(PLAN | {"vfr_kept": False}) is None


def test_a_kept_variable_rate_is_encoded_with_its_timestamps_passed_through() -> None:
    spec = OutputSpec(
        rate=Fraction(48), pix_fmt="yuv420p", rotation=0, color_range=None, color_space=None,
        color_transfer=None, color_primaries=None, crf=16, preset="medium",
    )  # fmt: skip
    command = build_command(
        Path("l"), Path("s"), Path("o.mp4"), spec, [], timed_video=Path("t.nut"), time_base=Fraction(1, 2000)
    )
    assert "concat" not in command
    assert "-r" not in command
    assert "-vf" not in command
    assert command[command.index("-fps_mode") + 1] == "passthrough"
    assert command[command.index("-video_track_timescale") + 1] == "2000"
    assert "file:t.nut" in command


def test_scene_cut_times_and_the_input_duration_come_from_the_timestamps() -> None:
    report = timing_report(PLAN, input_vfr=True, measured=OutputTiming(16, 0.0, 0.4, None, None))
    assert report.scene_cut_times_s == (0.2,)
    assert report.in_duration_s == pytest.approx(0.399), "the last frame lasts as long as the one before"
    assert (report.input_vfr, report.vfr_converted) == (True, False)


@pytest.mark.ffmpeg
def test_restamped_frames_carry_exactly_the_planned_timestamps(tmp_path: Path) -> None:
    chunk = tmp_path / "c.mkv"
    with LosslessWriter(chunk, width=32, height=16, pix_fmt="yuv420p", rate=Fraction(25)) as writer:
        for i in range(16):
            writer.write_rgb(np.full((16, 32, 3), 10 * i, np.uint8))
    stamps = output_times(PLAN)
    assert stamps is not None
    restamp([chunk], tmp_path / "t.nut", *stamps)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=pts:stream=time_base", "-of", "json", str(tmp_path / "t.nut")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    probed = json.loads(out.stdout)
    tick = Fraction(probed["streams"][0]["time_base"])
    base, pts = stamps
    assert [p["pts"] * tick for p in probed["packets"]] == [p * base for p in pts]
