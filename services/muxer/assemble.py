"""The final assembly: the concatenated video stream + the source's audio and subtitles, all copied.

Nothing is decoded or encoded here: the workers encoded the chunks in the job's codec, `concat`
joins them with exact timestamps, and FFmpeg muxes that stream with the source's audio (bit-exact)
and text subtitles into the MP4, with the source's metadata, chapters and display rotation. The output
keeps what the source's video is besides its pixels: where it starts against the audio (either may
lead; edit lists honoured) and its sample aspect ratio (in the container, and for H.264/HEVC in the
bitstream's VUI too, rewritten by FFmpeg's metadata bitstream filters without re-encoding). Every path
FFmpeg sees is a file name we chose inside our scratch folder, every input is restricted to the file
protocol, and the arguments are a list (no shell).
"""

from __future__ import annotations

import errno
import json
import math
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from infiniteflow_common.errors import InfiniteFlowError
from infiniteflow_common.events import JobSplit
from infiniteflow_common.streams import KNOWN_DISPOSITIONS, TEXT_SUBTITLES, Container, tracks_of

LEGACY_STYLED = frozenset({"ass", "ssa"})
"""Plans from before the container decision put styled subtitles into MP4 as plain text; now they go
to Matroska, styles and all."""


class MuxError(InfiniteFlowError):
    """FFmpeg could not assemble the output."""

    code = "E_MUX_FAILED"
    media_failure = True  # counted in infiniteflow_ffmpeg_failures_total


def track_timescale(rate: Fraction) -> int:
    """An MP4 timescale in which every frame lasts a whole number of ticks (exact rational rate)."""
    factor = max(1, math.ceil(10_000 / rate.numerator))
    return rate.numerator * factor


def probe_streams(path: Path, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """The streams of a local media file (ffprobe, file protocol only)."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-of", "json", "-show_streams", "file:" + str(path)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise MuxError(f"ffprobe could not read the source again: {result.stderr.strip()[-300:]}")
    streams: list[dict[str, Any]] = json.loads(result.stdout).get("streams", [])
    return streams


@dataclass(frozen=True)
class OutputTiming:
    """The output file as ffprobe reads it: the video's frames and end, the first audio stream's end."""

    video_frames: int
    video_start_s: float
    video_duration_s: float
    audio_start_s: float | None
    audio_duration_s: float | None

    @property
    def drift_s(self) -> float | None:
        """Audio end minus video end (positive: the audio lasts longer); None without audio."""
        if self.audio_start_s is None or self.audio_duration_s is None:
            return None
        return (self.audio_start_s + self.audio_duration_s) - (self.video_start_s + self.video_duration_s)


def timing_of(probed: dict[str, Any]) -> OutputTiming:
    """Read an `ffprobe -count_packets -show_streams` result (pure)."""
    streams: list[dict[str, Any]] = probed.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is None:
        raise MuxError("the output has no video stream", code="E_MUX_NO_VIDEO")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)

    def seconds(stream: dict[str, Any], field: str) -> float | None:
        value = stream.get(field)
        try:
            return float(value) if value not in (None, "N/A") else None
        except ValueError:
            return None

    frames = video.get("nb_read_packets") or video.get("nb_frames") or 0
    return OutputTiming(
        video_frames=int(frames),
        video_start_s=seconds(video, "start_time") or 0.0,
        video_duration_s=seconds(video, "duration") or 0.0,
        audio_start_s=None if audio is None else seconds(audio, "start_time") or 0.0,
        audio_duration_s=None if audio is None else seconds(audio, "duration"),
    )


def kept_tracks(probed: dict[str, Any]) -> list[dict[str, Any]]:
    """The audio and subtitle streams of an ffprobe result, as the job's result lists them (pure)."""
    return [
        {
            "index": t.index,
            "kind": t.kind,
            "codec": t.codec,
            "language": t.language,
            "title": t.title,
            "dispositions": sorted(t.dispositions),
        }
        for t in tracks_of(probed.get("streams") or [])
    ]


def measure_output(path: Path, timeout_s: float = 120.0) -> tuple[OutputTiming, list[dict[str, Any]]]:
    """Frame count and stream ends of the finished output (ffprobe counts the video packets), and its
    audio and subtitle tracks."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-count_packets", "-of", "json",
         "-show_streams", "file:" + str(path)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise MuxError(f"ffprobe could not read the output: {result.stderr.strip()[-300:]}")
    probed = json.loads(result.stdout)
    return timing_of(probed), kept_tracks(probed)


def output_stamps(plan: JobSplit) -> tuple[Fraction, list[int]]:
    """(time base, every output frame's timestamp in it): k / rate exactly, or for variable-rate input
    kept variable, between the input's own timestamps.

    With VFR kept, output frame k sits at position p = k · in_rate / out_rate on the input's frame
    index; between input frames i and i + 1 its time is ts(i) + (p − i) · (ts(i + 1) − ts(i)), so every
    input frame keeps its own timestamp and the frames a multiplier adds are spread evenly inside each
    interval. Past the last input frame the last interval repeats.
    """
    rate = Fraction(plan.out_fps_num, plan.out_fps_den)
    count = plan.out_frame_count
    if not plan.vfr_kept or not plan.vfr_pts:
        scale = track_timescale(rate)
        tick = int(scale / rate)
        return Fraction(1, scale), [k * tick for k in range(count)]
    pts = list(plan.vfr_pts)
    step = Fraction(plan.in_fps_num, plan.in_fps_den) / rate
    times: list[Fraction] = []
    last = len(pts) - 1
    for k in range(count):
        position = k * step
        i = min(int(position), max(0, last - 1))
        interval = pts[i + 1] - pts[i] if last >= 1 else 1
        times.append(pts[i] + (position - i) * interval)
    # one exact time base for all of them, 1/n s: the source's, divided as finely as the times need
    source = Fraction(plan.vfr_time_base_num, plan.vfr_time_base_den)
    denominator = source.denominator
    for time in times:
        denominator = math.lcm(denominator, (time * source).denominator)
    base = Fraction(1, denominator)
    return base, [int(time * source / base) for time in times]


def source_video(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The source's video stream the job interpolated: the first one that is not cover art."""
    return next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
        ),
        None,
    )


def _start(stream: dict[str, Any]) -> Fraction | None:
    value = stream.get("start_time")
    try:
        return None if value in (None, "N/A") else Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None


def input_start(streams: list[dict[str, Any]]) -> Fraction | None:
    """Where FFmpeg takes an input to start (`AVFormatContext.start_time`), from ffprobe's streams.

    FFmpeg (5.1, `update_stream_timings`) takes the earliest start of the audio and video streams;
    subtitle and data streams count only when nothing else starts, or when they start less than a
    second earlier. Without `-copyts` it shifts each input back by this start.
    """
    media = [
        s
        for st in streams
        if st.get("codec_type") not in ("subtitle", "data")
        if (s := _start(st)) is not None
    ]
    text = [
        s for st in streams if st.get("codec_type") in ("subtitle", "data") if (s := _start(st)) is not None
    ]
    first, first_text = min(media, default=None), min(text, default=None)
    if first is None or (first_text is not None and first - 1 < first_text < first):
        return first_text
    return first


def video_offset(streams: list[dict[str, Any]]) -> Fraction:
    """How late the source's video starts after the start of the source as FFmpeg reads it (≥ 0).

    The concatenated video starts at 0; shifted by this (`-itsoffset`), it keeps its place against
    the source's audio, which FFmpeg shifts back by the source's start.
    """
    video = source_video(streams)
    start, begin = (None if video is None else _start(video)), input_start(streams)
    if start is None or begin is None:
        return Fraction(0)
    return max(Fraction(0), start - begin)


def sample_aspect(streams: list[dict[str, Any]]) -> Fraction | None:
    """The source video's sample (pixel) aspect ratio, None when square or unknown."""
    video = source_video(streams) or {}
    num, _, den = str(video.get("sample_aspect_ratio") or "").partition(":")
    try:
        sar = Fraction(int(num), int(den))
    except (ValueError, ZeroDivisionError):
        return None
    return None if sar in (0, 1) else sar


SAR_FILTERS = {"h264": "h264_metadata", "hevc": "hevc_metadata"}
"""The bitstream filters that rewrite a stream's VUI aspect ratio in place (AV1 has none: the
container's alone carries it)."""


def video_codec_of(path: Path, timeout_s: float = 60.0) -> str | None:
    """The codec of a local file's first video stream (ffprobe), None when unreadable."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name", "-of", "csv=p=0", "file:" + str(path)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    return result.stdout.strip() or None if result.returncode == 0 else None


def video_options(
    video: Path, source_streams: list[dict[str, Any]], video_codec: str | None = None
) -> tuple[list[str], list[str]]:
    """(options before the video input, options for the output video) that keep the source's start
    against its audio and its sample aspect ratio."""
    before: list[str] = []
    offset = video_offset(source_streams)
    if offset:
        before = ["-itsoffset", f"{float(offset):.6f}"]
    after: list[str] = []
    sar = sample_aspect(source_streams)
    source = source_video(source_streams) or {}
    width, height = int(source.get("width") or 0), int(source.get("height") or 0)
    if sar is not None and width > 0 and height > 0:
        display = sar * width / height
        after += ["-aspect", f"{display.numerator}:{display.denominator}"]
        bsf = SAR_FILTERS.get(video_codec or video_codec_of(video) or "")
        if bsf is not None:
            after += ["-bsf:v", f"{bsf}=sample_aspect_ratio={sar.numerator}/{sar.denominator}"]
    return before, after


def remux_command(
    video: Path,
    source: Path,
    output: Path,
    source_streams: list[dict[str, Any]],
    *,
    timescale: int,
    rotation: int = 0,
    container: Container = "mp4",
    video_codec: str | None = None,
) -> list[str]:
    """The ffmpeg argument list that muxes the video with the source's audio and subtitles, all copied.

    Every audio stream is copied packet for packet; every subtitle stream the container takes is
    mapped (text ones converted to its text format), each with its tags and its exact dispositions
    (set explicitly, so FFmpeg adds no `default` flag of its own). For MP4/MOV the video's timestamps
    pass unchanged (`timescale` is a multiple of their time base); Matroska keeps 1 ms ones. The video
    keeps its start against the audio and its sample aspect ratio (`video_options`; `video_codec`, our
    output's codec as ffprobe names it, is read from `video` when not given and needed).
    """
    before, after = video_options(video, source_streams, video_codec)
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *before,
        "-protocol_whitelist", "file", "-i", "file:" + str(video),
        "-protocol_whitelist", "file", "-i", "file:" + str(source),
        "-map", "0:v:0", "-map", "1:a?",
    ]  # fmt: skip
    tracks = [t for t in tracks_of(source_streams) if t.kind == "subtitle"]
    if container == "mkv":
        command += ["-map", "1:s?", "-map", "1:t?"]  # attachments: the fonts of ASS subtitles
        # Matroska has no mov_text: MP4's text subtitles become SRT, word for word
        command += ["-c:s", "copy"]
        for position, track in enumerate(tracks):
            if track.codec in ("mov_text", "text"):
                command += [f"-c:s:{position}", "subrip"]
    elif tracks and all(t.codec in TEXT_SUBTITLES | LEGACY_STYLED for t in tracks):
        command += ["-map", "1:s?"]
        command += ["-c:s", "copy"] if all(t.codec == "mov_text" for t in tracks) else ["-c:s", "mov_text"]
    else:
        tracks = []  # a plan from before the container decision: MP4 takes no bitmap subtitles
    command += ["-map_metadata", "1", "-map_chapters", "1"]
    command += ["-c:v", "copy", "-c:a", "copy", *after]
    command += dispositions(source_streams, subtitles=bool(tracks))
    if container != "mkv":
        command += ["-video_track_timescale", str(timescale)]
    if rotation % 360 and container != "mkv":
        # FFmpeg 5.1 writes the display matrix from this tag when stream-copying; it reads back as `rotation`
        command += ["-metadata:s:v:0", f"rotate={rotation % 360}"]
    if container != "mkv":
        command += ["-movflags", "+faststart"]
    command += ["-f", {"mp4": "mp4", "mov": "mov", "mkv": "matroska"}[container], "file:" + str(output)]
    return command


def dispositions(source_streams: list[dict[str, Any]], *, subtitles: bool) -> list[str]:
    """`-disposition` options giving each copied audio (and subtitle) stream exactly its source's flags.

    Without them FFmpeg marks the first stream of a kind `default` when none is, changing the file.
    """
    options = ["-disposition:v:0", "default"]
    counts = {"audio": 0, "subtitle": 0}
    for track in tracks_of(source_streams):
        if track.kind == "subtitle" and not subtitles:
            continue
        position = counts[track.kind]
        counts[track.kind] += 1
        flags = "+".join(name for name in KNOWN_DISPOSITIONS if name in track.dispositions) or "0"
        options += [f"-disposition:{track.kind[0]}:{position}", flags]
    return options


def run_ffmpeg(command: list[str], timeout_s: float) -> None:
    """Run ffmpeg; a non-zero exit or a timeout becomes a MuxError with ffmpeg's last words."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MuxError(f"ffmpeg did not finish within {timeout_s:.0f} s", code="E_MUX_TIMEOUT") from exc
    if result.returncode != 0:
        if "No space left on device" in result.stderr:
            raise OSError(errno.ENOSPC, "No space left on device (ffmpeg's output)")
        raise MuxError(f"ffmpeg failed: {result.stderr.strip()[-500:]}")
