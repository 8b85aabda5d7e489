"""The output keeps what the source is: every codec through the whole data path, seams exact (issue 22).

Each test makes its source with FFmpeg, then runs the worker's and the muxer's own code on it: the
source's frames (each written twice, once as the decoded frame and once as RGB, as a ×2 job writes
copies and interpolated frames) into two `ChunkEncoder` chunks, `concatenate`, then `remux_command`
with the source's audio, and reads the output back with ffprobe.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from infiniteflow_common.encoding import encoder_args, size_problem
from infiniteflow_common.events import JobSplit, VideoEncoding
from infiniteflow_common.output import OutputOptions, available_encoders, for_source
from infiniteflow_common.streams import Container, plan_streams
from services.gpu_interp.media_io import ChunkEncoder
from services.ingest.config import DEFAULT_ALLOWED_FORMATS
from services.ingest.params import (
    InvalidParams,
    ParamDefaults,
    check_against_probe,
    parse_output_options,
    parse_params,
    resolve_output,
)
from services.ingest.probe import ProbeLimits, mark_end_padding, probe_source
from services.muxer.assemble import (
    input_start,
    output_stamps,
    probe_streams,
    remux_command,
    run_ffmpeg,
    sample_aspect,
    video_offset,
)
from services.muxer.concat import concatenate
from tests.support.clips import decoded_audio_md5, run

pytestmark = pytest.mark.ffmpeg

FAST = {"libx264": "veryfast", "libx265": "ultrafast", "libsvtav1": "12", "libaom-av1": "8"}
"""Presets that keep the tests quick (x264 veryfast and x265 ultrafast still use B-frames)."""


def _plan(in_rate: Fraction, source_frames: int) -> JobSplit:
    return JobSplit(
        job_id=uuid.UUID(int=22), chunk_count=2, source_frame_count=source_frames,
        in_fps_num=in_rate.numerator, in_fps_den=in_rate.denominator, out_fps_num=(2 * in_rate).numerator,
        out_fps_den=(2 * in_rate).denominator, out_frame_count=2 * source_frames, scene_cuts=(),
        vfr_converted=False, split_at=datetime(2026, 12, 3, tzinfo=UTC),
    )  # fmt: skip


def _through_pipeline(source: Path, encoder: str, output: Path, container: Container = "mp4") -> Path:
    """The source ×2 (each frame twice) through chunk encode, concatenation and the final remux."""
    with av.open(str(source)) as opened:
        stream = opened.streams.video[0]
        frames = list(opened.decode(stream))
        assert stream.average_rate is not None
        rate = Fraction(stream.average_rate)
        context = stream.codec_context
        width, height, pix_fmt = context.width, context.height, context.pix_fmt
    encoding = VideoEncoding(encoder=encoder, pix_fmt=pix_fmt, preset=FAST[encoder])
    half = len(frames) // 2
    paths = [output.with_suffix(".0.mkv"), output.with_suffix(".1.mkv")]
    for path, part in zip(paths, (frames[:half], frames[half:]), strict=True):
        with ChunkEncoder(path, encoding, width=width, height=height, rate=2 * rate, timeout_s=120) as chunk:
            for frame in part:
                chunk.write(frame)
                chunk.write_rgb(frame.to_ndarray(format="rgb24"))
    time_base, stamps = output_stamps(_plan(rate, len(frames)))
    video = output.with_suffix(".video.mp4")
    concatenate(paths, [2 * half, 2 * (len(frames) - half)], 2 * rate, video, time_base, stamps)
    command = remux_command(
        video, source, output, probe_streams(source), timescale=time_base.denominator, container=container
    )
    run_ffmpeg(command, timeout_s=120)
    return output


def _ffprobe(path: Path, *options: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", *options, "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    probed: dict[str, Any] = json.loads(out.stdout)
    return probed


def _rgb(path: Path) -> np.ndarray[Any, Any]:
    with av.open(str(path)) as opened:
        return np.stack([f.to_ndarray(format="rgb24") for f in opened.decode(opened.streams.video[0])])


def _assert_exact_seams(source: Path, output: Path, *, quiet: bool = True) -> None:
    """Output frames 2k and 2k + 1 are source frame k, at k / (2 · rate) (Matroska: within its 1 ms),
    and the stream decodes cleanly (`quiet`: without a word from FFmpeg)."""
    decoded = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(output), "-f", "null", "-"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert decoded.returncode == 0, decoded.stderr
    assert decoded.stderr == "" or not quiet, decoded.stderr
    original, result = _rgb(source), _rgb(output)
    assert len(result) == 2 * len(original)
    for index, frame in enumerate(result):
        errors = np.abs(original.astype(int) - frame.astype(int)).mean(axis=(1, 2, 3))
        assert int(np.argmin(errors)) == index // 2, f"output frame {index} out of place"
    probed = _ffprobe(output, "-select_streams", "v:0", "-show_entries", "packet=pts:stream=time_base")
    base = Fraction(probed["streams"][0]["time_base"])
    source_rate = _ffprobe(source, "-select_streams", "v:0", "-show_entries", "stream=r_frame_rate")
    rate = 2 * Fraction(source_rate["streams"][0]["r_frame_rate"])
    times = sorted(int(p["pts"]) * base for p in probed["packets"])
    tick = Fraction(1, 1000) if output.suffix == ".mkv" else Fraction(0)
    assert all(abs(t - times[0] - k / rate) <= tick for k, t in enumerate(times))


def _source(path: Path, *video: str, seconds: float = 1.0, size: str = "160x96") -> Path:
    run(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", *video, "-c:a", "aac", str(path),
    )  # fmt: skip
    return path


ENCODERS = [
    ("libx264", "mp4"), ("libx264", "mov"), ("libx264", "mkv"),
    ("libx265", "mp4"), ("libx265", "mov"), ("libx265", "mkv"),
    ("libsvtav1", "mp4"), ("libsvtav1", "mkv"), ("libaom-av1", "mp4"), ("libaom-av1", "mkv"),
]  # fmt: skip


@pytest.mark.parametrize(("encoder", "container"), ENCODERS)
def test_every_output_codec_joins_and_remuxes_with_exact_seams(
    tmp_path: Path, encoder: str, container: Container
) -> None:
    source = _source(tmp_path / "source.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p")
    output = _through_pipeline(source, encoder, tmp_path / f"out.{container}", container)
    _assert_exact_seams(source, output)


SOURCES = {
    "h264": ("source.mp4", ["-c:v", "libx264"]),
    "hevc": ("source.mkv", ["-c:v", "libx265", "-x265-params", "log-level=error"]),
    "av1": ("source.webm", ["-c:v", "libaom-av1", "-cpu-used", "8", "-c:a", "libopus"]),
}


@pytest.mark.parametrize("codec", sorted(SOURCES))
def test_codec_source_goes_end_to_end_for_every_source_codec_it_takes(tmp_path: Path, codec: str) -> None:
    name, video = SOURCES[codec]
    source = tmp_path / name
    run(
        "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=1", "-f", "lavfi", "-i",
        "sine=frequency=440:duration=1", *video, str(source),
    )  # fmt: skip
    resolved = for_source(OutputOptions(codec="source"), codec, available_encoders())
    assert resolved.encoder is not None
    output = _through_pipeline(source, resolved.encoder, tmp_path / "out.mp4")
    _assert_exact_seams(source, output)
    streams = _ffprobe(output, "-show_entries", "stream=codec_name")["streams"]
    assert streams[0]["codec_name"] == codec


def _starts(path: Path) -> tuple[Fraction, Fraction]:
    """(video start, first audio stream's start) in seconds, as ffprobe reads them (edit lists honoured)."""
    streams = _ffprobe(path, "-show_entries", "stream=codec_type,start_time")["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    audio = next(s for s in streams if s["codec_type"] == "audio")
    return Fraction(video["start_time"]), Fraction(audio["start_time"])


def _audio(path: Path) -> tuple[float, int, np.ndarray[Any, Any]]:
    """(time of the first decoded sample, sample rate, the decoded samples of the first channel)."""
    with av.open(str(path)) as opened:
        stream = opened.streams.audio[0]
        frames = [f for f in opened.decode(stream) if f.pts is not None]
        first = float(frames[0].pts * frames[0].time_base)
        samples = np.concatenate([f.to_ndarray().reshape(len(f.layout.channels), -1)[0] for f in frames])
        return first, stream.rate, samples.astype(np.float64)


def _audio_shift(source: Path, output: Path) -> float:
    """How much later (s) the output plays the source's audio: its sound found by cross-correlation,
    whatever each container says of priming samples and edits."""
    src_first, rate, src = _audio(source)
    out_first, _, out = _audio(output)
    margin, length = 4096, 16384
    scores = np.correlate(out[: length + 2 * margin], src[margin : margin + length], "valid")
    lag = int(np.argmax(scores)) - margin  # source sample i plays as output sample i + lag
    return out_first + lag / rate - src_first


def _offset_source(tmp_path: Path, kind: str) -> Path:
    """Sources whose video does not start with their audio, made the ways cameras and tools make them."""
    video, audio = tmp_path / "v.mp4", tmp_path / "a.m4a"
    run("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=1.2", "-c:v", "libx264", str(video))
    run("-f", "lavfi", "-i", "anoisesrc=duration=1.2:seed=22:amplitude=0.5", "-c:a", "aac", str(audio))
    source = tmp_path / f"source-{kind}"
    if kind in ("video-late.mp4", "video-late.mkv"):  # MP4: an empty edit before the video
        run("-itsoffset", "0.5", "-i", str(video), "-i", str(audio), "-c", "copy", str(source))
    elif kind == "audio-late.mp4":
        run("-i", str(video), "-itsoffset", "0.5", "-i", str(audio), "-c", "copy", str(source))
    elif kind == "no-edit-list.mp4":  # B-frames: the first video frame is shown at 0.080 s
        run("-i", str(video), "-i", str(audio), "-c", "copy", "-use_editlist", "0", str(source))
    elif kind == "flv.flv":  # the audio's priming moves the start: video +0.023 s
        run("-i", str(video), "-i", str(audio), "-c", "copy", str(source))
    return source


@pytest.mark.parametrize("container", ["mp4", "mkv"])
@pytest.mark.parametrize(
    "kind", ["video-late.mp4", "audio-late.mp4", "video-late.mkv", "no-edit-list.mp4", "flv.flv"]
)
def test_the_output_keeps_the_sources_offset_between_video_and_audio(
    tmp_path: Path, kind: str, container: Container
) -> None:
    source = _offset_source(tmp_path, kind)
    video, audio = _starts(source)
    assert abs(video - audio) > Fraction(1, 50), "the source must have an offset to keep"
    output = _through_pipeline(source, "libx264", tmp_path / f"out.{container}", container)
    out_video, out_audio = _starts(output)
    frame = 1 / 50  # one output frame at 25 fps × 2
    # what is seen moved as much as what is heard (Matroska shows AAC's priming samples: start_time
    # says where they begin, the sound comes 1024 samples later, as in the source)
    assert abs(float(out_video - video) - _audio_shift(source, output)) <= frame
    if container == "mp4":  # an edit list says where the sound begins: ffprobe's starts say it all
        assert abs((out_video - out_audio) - (video - audio)) <= frame, (
            f"source video − audio {float(video - audio):.3f} s, output {float(out_video - out_audio):.3f} s"
        )


def _elementary_sar(path: Path, codec: str) -> str:
    """The sample aspect ratio the video bitstream itself says (its VUI), the container left out."""
    raw = path.with_suffix(f".{codec}")
    run("-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", codec, str(raw))
    return str(
        _ffprobe(raw, "-show_entries", "stream=sample_aspect_ratio")["streams"][0]["sample_aspect_ratio"]
    )


@pytest.mark.parametrize(("encoder", "container"), [e for e in ENCODERS if e[0] != "libaom-av1"])
def test_anamorphic_pal_keeps_its_sample_aspect_ratio(
    tmp_path: Path, encoder: str, container: Container
) -> None:
    source = tmp_path / "pal.mp4"
    run(
        "-f", "lavfi", "-i", "testsrc2=size=720x576:rate=25:duration=0.4", "-f", "lavfi", "-i",
        "sine=duration=0.4", "-vf", "setsar=16/15", "-c:v", "libx264", "-c:a", "aac", str(source),
    )  # fmt: skip
    output = _through_pipeline(source, encoder, tmp_path / f"out.{container}", container)
    stream = _ffprobe(
        output, "-select_streams", "v:0", "-show_entries", "stream=width,height,sample_aspect_ratio"
    )
    assert stream["streams"][0] == {"width": 720, "height": 576, "sample_aspect_ratio": "16:15"}
    frames = _ffprobe(output, "-select_streams", "v:0", "-show_entries", "frame=sample_aspect_ratio")[
        "frames"
    ]
    assert {f["sample_aspect_ratio"] for f in frames} == {"16:15"}
    if encoder in ("libx264", "libx265"):
        assert _elementary_sar(output, "h264" if encoder == "libx264" else "hevc") == "16:15"


def test_the_video_offset_is_counted_from_where_ffmpeg_starts_the_source() -> None:
    def stream(kind: str, start: str | None, **extra: Any) -> dict[str, Any]:
        return {"codec_type": kind, "start_time": start, **extra}

    assert video_offset([stream("video", "0.500000"), stream("audio", "0.000000")]) == Fraction(1, 2)
    assert video_offset([stream("video", "0.000000"), stream("audio", "0.476009")]) == 0, "audio late: kept"
    assert video_offset([stream("video", "0.080000"), stream("audio", "0.057000")]) == Fraction(23, 1000)
    assert video_offset([stream("video", "N/A"), stream("audio", "0.1")]) == 0
    cover = stream("video", "0.000000", disposition={"attached_pic": 1})
    # cover art is not the video, but its start counts where FFmpeg starts the file
    assert video_offset([cover, stream("video", "1.0"), stream("audio", "0.5")]) == 1
    # a subtitle counts when it starts less than a second before the rest (FFmpeg's rule), else not
    assert input_start([stream("video", "2.0"), stream("subtitle", "1.5")]) == Fraction(3, 2)
    assert input_start([stream("video", "2.0"), stream("subtitle", "0.5")]) == 2
    assert input_start([stream("subtitle", "0.5")]) == Fraction(1, 2)


def test_the_sample_aspect_ratio_is_written_to_the_container_and_the_bitstream() -> None:
    pal = [{"codec_type": "video", "width": 720, "height": 576, "sample_aspect_ratio": "16:15"}]
    assert sample_aspect(pal) == Fraction(16, 15)
    assert sample_aspect([{"codec_type": "video", "sample_aspect_ratio": "1:1"}]) is None
    assert sample_aspect([{"codec_type": "video", "sample_aspect_ratio": "0:1"}]) is None
    command = remux_command(Path("v.mp4"), Path("s"), Path("o.mp4"), pal, timescale=50, video_codec="h264")
    assert command[command.index("-aspect") + 1] == "4:3"
    assert command[command.index("-bsf:v") + 1] == "h264_metadata=sample_aspect_ratio=16/15"
    av1 = remux_command(Path("v.mp4"), Path("s"), Path("o.mp4"), pal, timescale=50, video_codec="av1")
    assert "-bsf:v" not in av1, "AV1 has no aspect ratio of its own: the container's says it"


OPUS_SOURCES = {
    "vp9-opus.webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-c:a", "libopus"],
    "h264-opus.mkv": ["-c:v", "libx264", "-c:a", "libopus", "-b:a", "64k"],
    "h264-opus.mp4": ["-c:v", "libx264", "-c:a", "libopus"],
    "h264-aac.mkv": ["-c:v", "libx264", "-c:a", "aac"],
    "h264-aac.mp4": ["-c:v", "libx264", "-c:a", "aac"],
}


@pytest.mark.parametrize("name", sorted(OPUS_SOURCES))
async def test_the_outputs_audio_decodes_to_the_sources_samples(tmp_path: Path, name: str) -> None:
    source = tmp_path / name
    run(
        "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=1", "-f", "lavfi", "-i",
        "anoisesrc=duration=1.01:seed=5:amplitude=0.4", *OPUS_SOURCES[name], str(source),
    )  # fmt: skip
    _, streams = await probe_source(source, ProbeLimits(allowed_formats=DEFAULT_ALLOWED_FORMATS))
    plan = plan_streams(streams, video_codec="h264")
    output = _through_pipeline(source, "libx264", tmp_path / f"out.{plan.container}", plan.container)
    assert decoded_audio_md5(output) == decoded_audio_md5(source), f"in {plan.container}: {plan.reason}"


def test_audio_trimmed_at_its_end_goes_to_matroska_which_plays_the_trim() -> None:
    streams: list[dict[str, Any]] = [
        {"index": 0, "codec_type": "video", "codec_name": "vp9"},
        {"index": 1, "codec_type": "audio", "codec_name": "opus"},
    ]
    assert plan_streams(streams, video_codec="h264").container == "mp4"
    tail = {
        "packets": [{"stream_index": 1}, {"stream_index": 1, "side_data_list": [{"discard_padding": 648}]}]
    }
    mark_end_padding(streams, tail)
    assert streams[1]["discard_padding"] == 648
    plan = plan_streams(streams, video_codec="h264")
    assert plan.container == "mkv"
    assert "audio stream #1 (opus, trimmed at its end)" in plan.reason


def test_which_encoders_keep_an_odd_frame_size() -> None:
    assert (
        size_problem("libx264", "yuv420p", 321, 241)
        == "libx264 codes yuv420p only at an even width and height"
    )
    assert (
        size_problem("libx265", "yuv422p10le", 321, 240) == "libx265 codes yuv422p10le only at an even width"
    )
    assert size_problem("libx264", "yuv422p", 320, 241) is None, "4:2:2 has whole chroma rows"
    assert size_problem("libx264", "yuv444p", 321, 241) is None
    assert size_problem("libx264", "yuv420p", 320, 240) is None
    assert size_problem("libsvtav1", "yuv420p", 322, 241) == "libsvtav1 codes yuv420p only at an even height"
    assert size_problem("libaom-av1", "yuv420p", 321, 241) is None


async def _odd_source(tmp_path: Path, pix_fmt: str) -> tuple[Path, Any]:
    source = tmp_path / f"odd-{pix_fmt}.mkv"
    run(
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=0.4", "-vf",
        f"scale=321:241,format={pix_fmt}", "-c:v", "ffv1", str(source),
    )  # fmt: skip
    probe, _ = await probe_source(source, ProbeLimits(allowed_formats=DEFAULT_ALLOWED_FORMATS))
    assert (probe.width, probe.height) == (321, 241)
    return source, probe


@pytest.mark.parametrize("codec", ["h264", "h265", "source"])
async def test_an_odd_420_size_in_h264_or_hevc_is_refused_at_ingest(tmp_path: Path, codec: str) -> None:
    _, probe = await _odd_source(tmp_path, "yuv420p")
    if codec == "source":
        probe = probe.model_copy(update={"video_codec": "h264"})  # as if the odd source were H.264
    defaults = ParamDefaults(encoders=available_encoders())
    with pytest.raises(InvalidParams) as refused:
        resolve_output(parse_output_options({"codec": codec}, defaults), probe, defaults)
    assert refused.value.code == "E_OUTPUT_SIZE_UNSUPPORTED"
    assert "321×241" in refused.value.message
    assert ("h265" if codec == "h265" else "h264") in refused.value.message
    assert "codec=av1" in refused.value.message


@pytest.mark.parametrize(("codec", "pix_fmt"), [("av1", "yuv420p"), ("h264", "yuv444p"), ("h265", "yuv444p")])
async def test_an_odd_size_comes_out_exactly_where_the_codec_can_code_it(
    tmp_path: Path, codec: str, pix_fmt: str
) -> None:
    source, probe = await _odd_source(tmp_path, pix_fmt)
    defaults = ParamDefaults(encoders=available_encoders())
    options = resolve_output(parse_output_options({"codec": codec}, defaults), probe, defaults)
    assert options.encoder is not None
    if codec == "av1":
        assert options.encoder == "libaom-av1", "SVT-AV1 codes even sizes only"
    output = _through_pipeline(source, options.encoder, tmp_path / "out.mkv", "mkv")
    stream = _ffprobe(output, "-select_streams", "v:0", "-show_entries", "stream=width,height,pix_fmt")
    assert stream["streams"][0] == {"width": 321, "height": 241, "pix_fmt": pix_fmt}
    _assert_exact_seams(source, output)


async def _fast_source(tmp_path: Path) -> tuple[Path, Any]:
    """A 480 fps clip (the fastest rate ingest takes) with audio."""
    source = tmp_path / "fast.mp4"
    run(
        "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=480:duration=0.1", "-f", "lavfi", "-i",
        "sine=duration=0.1", "-c:v", "libx264", "-c:a", "aac", str(source),
    )  # fmt: skip
    probe, _ = await probe_source(source, ProbeLimits(allowed_formats=DEFAULT_ALLOWED_FORMATS))
    return source, probe


@pytest.mark.parametrize("asked", [{"multiplier": "4"}, {"multiplier": "8"}, {"target-fps": "1001"}])
async def test_output_rates_above_1000_fps_are_refused_at_ingest(
    tmp_path: Path, asked: dict[str, str]
) -> None:
    _, probe = await _fast_source(tmp_path)
    with pytest.raises(InvalidParams) as refused:
        check_against_probe(parse_params(asked, ParamDefaults(max_fps=4000)), probe)
    assert refused.value.code == "E_OUTPUT_RATE_UNSUPPORTED"
    assert "480 fps" in refused.value.message
    assert "at most 1000 fps" in refused.value.message
    check_against_probe(parse_params({"multiplier": "2"}, ParamDefaults()), probe)  # 960 fps is taken


@pytest.mark.parametrize(
    ("encoder", "container"), [("libx264", "mp4"), ("libx264", "mkv"), ("libsvtav1", "mp4")]
)
async def test_960_fps_goes_end_to_end_in_every_codec(
    tmp_path: Path, encoder: str, container: Container
) -> None:
    source, _ = await _fast_source(tmp_path)
    output = _through_pipeline(source, encoder, tmp_path / f"out.{container}", container)
    # Matroska keeps each frame within 0.5 ms of its time, apart from the next; FFmpeg's null muxer,
    # re-timing them at 1/960 s, finds some rounded onto the same tick and says so
    _assert_exact_seams(source, output, quiet=container != "mkv")
    rate = _ffprobe(output, "-select_streams", "v:0", "-show_entries", "stream=r_frame_rate")["streams"][0]
    assert rate["r_frame_rate"] == "960/1"


def test_svtav1_above_240_fps_is_told_a_whole_fraction_of_the_rate_and_the_bitrate() -> None:
    svt = VideoEncoding(encoder="libsvtav1", pix_fmt="yuv420p", bitrate=8_000_000)
    args = encoder_args(svt, Fraction(960))
    assert args[args.index("-svtav1-params") + 1] == "fps-num=240:fps-denom=1"
    assert args[args.index("-b:v") + 1] == "2000000", "the same bits per frame as at the real rate"
    ntsc = encoder_args(svt, Fraction(480000, 1001))
    assert ntsc[ntsc.index("-svtav1-params") + 1] == "fps-num=240000:fps-denom=1001"
    assert "-svtav1-params" not in encoder_args(svt, Fraction(240))
    assert "-svtav1-params" not in encoder_args(
        VideoEncoding(encoder="libx264", pix_fmt="yuv420p"), Fraction(960)
    )
