"""Variable-rate input keeps every source timestamp; a multiplier adds frames evenly inside each interval."""

from __future__ import annotations

import itertools
import json
import subprocess
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infiniteflow_common.events import JobSplit, VideoEncoding
from services.gpu_interp.media_io import ChunkEncoder
from services.muxer.assemble import OutputTiming, output_stamps, remux_command
from services.muxer.concat import concatenate
from services.muxer.report import timing_report

# 30 fps for five frames, then 15 fps: ticks of 1/1000 s
PTS = (0, 33, 67, 100, 133, 200, 267, 333)


def _plan(**overrides: Any) -> JobSplit:
    values: dict[str, Any] = {
        "job_id": uuid.UUID(int=2), "chunk_count": 1, "source_frame_count": 8, "in_fps_num": 24,
        "in_fps_den": 1, "out_fps_num": 48, "out_fps_den": 1, "out_frame_count": 16, "scene_cuts": (5,),
        "vfr_converted": False, "split_at": datetime(2026, 11, 30, tzinfo=UTC), "planned_frame_count": 8,
        "vfr_kept": True, "vfr_time_base_num": 1, "vfr_time_base_den": 1000, "vfr_pts": PTS,
    }  # fmt: skip
    return JobSplit(**(values | overrides))


PLAN = _plan()


def test_each_source_frame_keeps_its_time_and_the_added_ones_split_each_interval() -> None:
    base, pts = output_stamps(PLAN)
    assert base == Fraction(1, 2000)
    assert len(pts) == 16
    seconds = [p * base for p in pts]
    assert seconds[0::2] == [Fraction(p, 1000) for p in PTS], "every source frame at its own time"
    assert seconds[1] == Fraction(33, 2000)
    assert seconds[11] == Fraction(200 + 267, 2000), "the middle of the 15 fps interval"
    assert seconds[15] == Fraction(333 * 2 + 66, 2000), "after the last frame the last interval repeats"
    assert all(b > a for a, b in itertools.pairwise(pts))


def test_without_kept_timestamps_the_stamps_are_the_constant_rate() -> None:
    base, pts = output_stamps(_plan(vfr_kept=False, vfr_pts=None))
    assert [p * base for p in pts] == [Fraction(k, 48) for k in range(16)]


def test_a_kept_variable_rate_is_muxed_with_its_timestamps_passed_through() -> None:
    base, _ = output_stamps(PLAN)
    command = remux_command(Path("v.mp4"), Path("s"), Path("o.mp4"), [], timescale=base.denominator)
    assert "-r" not in command
    assert "-vf" not in command
    assert command[command.index("-c:v") + 1] == "copy"
    assert command[command.index("-video_track_timescale") + 1] == "2000"
    assert "file:v.mp4" in command


def test_scene_cut_times_and_the_input_duration_come_from_the_timestamps() -> None:
    report = timing_report(PLAN, input_vfr=True, measured=OutputTiming(16, 0.0, 0.4, None, None))
    assert report.scene_cut_times_s == (0.2,)
    assert report.in_duration_s == pytest.approx(0.399), "the last frame lasts as long as the one before"
    assert (report.input_vfr, report.vfr_converted) == (True, False)


@pytest.mark.ffmpeg
def test_concatenated_frames_carry_exactly_the_planned_timestamps(tmp_path: Path) -> None:
    # medium uses B-frames: the chunks reorder frames
    encoding = VideoEncoding(encoder="libx264", pix_fmt="yuv420p", crf=20, preset="medium")
    paths = [tmp_path / "0.mkv", tmp_path / "1.mkv"]
    for part, path in enumerate(paths):
        with ChunkEncoder(path, encoding, width=32, height=16, rate=Fraction(48), timeout_s=60) as encoder:
            for i in range(8):
                encoder.write_rgb(np.full((16, 32, 3), 10 * (8 * part + i), np.uint8))
    base, stamps = output_stamps(PLAN)
    concatenate(paths, [8, 8], Fraction(48), tmp_path / "v.mp4", base, stamps)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=pts,dts:stream=time_base", "-of", "json",
         str(tmp_path / "v.mp4")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    probed = json.loads(out.stdout)
    tick = Fraction(probed["streams"][0]["time_base"])
    packets = probed["packets"]
    assert sorted(p["pts"] * tick for p in packets) == [p * base for p in stamps]
    dts = [p["dts"] for p in packets]
    assert all(b > a for a, b in itertools.pairwise(dts)), "decode timestamps strictly increase"
    assert all(p["dts"] <= p["pts"] for p in packets)
