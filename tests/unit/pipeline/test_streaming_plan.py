"""Chunks announced while the splitter's pass runs are the chunks the whole pass would plan, frame for
frame and timestamp for timestamp; only a constant-rate source with usable timestamps streams."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from infiniteflow_common import timing
from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.events import VideoEncoding, VideoUploaded
from infiniteflow_common.media import MediaError, decode_video
from services.splitter.analysis import (
    AnalysisSettings,
    PacketRateCheck,
    TimingPass,
    analyse,
    streams_at_constant_rate,
)
from services.splitter.plan import ChunkStream, plan_job
from services.splitter.specs import chunk_spec, chunk_specs
from tests.support.clips import panning_clip

pytestmark = pytest.mark.ffmpeg

SETTINGS = AnalysisSettings(27.0, 8, 64, 1.0)
ENCODING = VideoEncoding(encoder="libx264", pix_fmt="yuv420p", crf=16)


def _event() -> VideoUploaded:
    return VideoUploaded.from_avro(SchemaCatalog.load().example("VideoUploaded"))


def test_chunks_announced_during_the_pass_are_those_of_the_whole_pass(tmp_path: Path) -> None:
    # a mid-GOP cut at frame 47, keyframes every 12 frames: decode starts differ from chunk starts
    clip = panning_clip(
        tmp_path / "cut.mp4", width=160, height=96, rate=Fraction(25), seconds=4, cut_at=47, audio=False
    )
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(clip.path), "-c:v", "libx264", "-g", "12",
         "-bf", "2", str(tmp_path / "gop.mp4")],
        check=True,
    )  # fmt: skip
    source, rate, out_rate, size = tmp_path / "gop.mp4", Fraction(25), Fraction(50), 10
    event = _event()

    whole = analyse(source, 25, 1, SETTINGS)
    plan = plan_job(len(whole.source_of), rate, out_rate, whole.scene_starts, size)
    expected = chunk_specs(event, plan, whole, ENCODING, model="auto")

    timing_pass, stream, streamed = TimingPass(rate, SETTINGS), ChunkStream(rate, out_rate, size), []
    for frame in decode_video(source):
        timing_pass.feed(frame)
        for chunk in stream.advance(timing_pass.known(), timing_pass.cuts.starts):
            so_far = timing_pass.so_far()
            streamed.append(chunk_spec(event, chunk, so_far, ENCODING, out_rate=out_rate, chunk_count=None, model="auto"))  # fmt: skip
    assert len(streamed) >= len(expected) // 2, "most chunks were announced before the pass ended"
    analysis = timing_pass.finish(keep_vfr=True, constant=True)
    frames = len(analysis.source_of)
    rest = stream.finish(frames, analysis.scene_starts, timing.plan(frames, rate, out_rate))
    assert stream.scene_starts == plan.scene_starts == (47,)
    total = len(streamed) + len(rest)
    final = [chunk_spec(event, c, analysis, ENCODING, out_rate=out_rate, chunk_count=total, model="auto") for c in rest]  # fmt: skip
    got = [spec.model_copy(update={"chunk_count": total}) for spec in streamed] + final
    assert got == expected
    assert all(spec.source and spec.source.decode_start_pts is not None for spec in got[1:])


def test_only_a_constant_rate_source_with_timestamps_streams(tmp_path: Path) -> None:
    constant = panning_clip(tmp_path / "cfr.mp4", width=64, height=48, seconds=1, audio=False)
    variable = tmp_path / "vfr.mkv"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30:duration=2",
         "-vf", "setpts='if(lt(N,20),N,2*N-20)/30/TB'", "-fps_mode", "passthrough", "-c:v", "libx264",
         str(variable)],
        check=True,
    )  # fmt: skip
    assert streams_at_constant_rate(constant.path)
    assert not streams_at_constant_rate(variable), "a variable rate is known only after the whole pass"


def test_the_packet_check_runs_beside_the_pass_and_a_broken_one_plans_after_it(tmp_path: Path) -> None:
    clip = panning_clip(tmp_path / "cfr.mp4", width=64, height=48, seconds=2, audio=False)
    with PacketRateCheck(clip.path) as check:
        frames = sum(1 for _ in decode_video(clip.path))  # the pass goes on meanwhile
        assert check.constant_rate()
    assert frames == clip.frames
    with PacketRateCheck(clip.path, timeout_s=1e-6) as overrun:
        assert not overrun.constant_rate(), "a check that overruns plans the source after its pass"
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.path.read_bytes()[:2000])
    with pytest.raises(MediaError):
        PacketRateCheck(truncated)


def test_a_stream_streams_only_when_every_packet_is_timestamped_distinct_and_evenly_spaced() -> None:
    tick = Fraction(1, 15360)
    frame = 512  # 30 fps
    b_frames = [0, 3 * frame, frame, 2 * frame, 6 * frame, 4 * frame, 5 * frame]  # decode order
    assert timing.packets_at_constant_rate(b_frames, tick)
    assert timing.packets_at_constant_rate([0, 512, 1025, 1536], tick), "a tick of rounding is one rate"
    assert not timing.packets_at_constant_rate([0, 512, 1024, 2048], tick), "a frame twice as long"
    assert not timing.packets_at_constant_rate([0, 512, 512, 1024], tick), "two frames at one time"
    assert not timing.packets_at_constant_rate([0, None, 1024], tick), "a packet without a timestamp"
    assert not timing.packets_at_constant_rate([0], tick)
