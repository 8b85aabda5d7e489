"""The final assembly: the concatenated video stream + the source's audio and subtitles, all copied.

Nothing is decoded or encoded here: the workers encoded the chunks in the job's codec, `concat`
joins them with exact timestamps, and FFmpeg muxes that stream with the source's audio (bit-exact)
and text subtitles into the MP4, with the source's metadata, chapters and display rotation. Every path
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


def output_stamps(split: JobSplit) -> tuple[Fraction, list[int]]:
    """(time base, every output frame's timestamp in it): k / rate exactly, or for variable-rate input
    kept variable, between the input's own timestamps.

    With VFR kept, output frame k sits at position p = k · in_rate / out_rate on the input's frame
    index; between input frames i and i + 1 its time is ts(i) + (p − i) · (ts(i + 1) − ts(i)), so every
    input frame keeps its own timestamp and the frames a multiplier adds are spread evenly inside each
    interval. Past the last input frame the last interval repeats.
    """
    rate = Fraction(split.out_fps_num, split.out_fps_den)
    count = split.out_frame_count
    if not split.vfr_kept or not split.vfr_pts:
        scale = track_timescale(rate)
        tick = int(scale / rate)
        return Fraction(1, scale), [k * tick for k in range(count)]
    pts = list(split.vfr_pts)
    step = Fraction(split.in_fps_num, split.in_fps_den) / rate
    times: list[Fraction] = []
    last = len(pts) - 1
    for k in range(count):
        position = k * step
        i = min(int(position), max(0, last - 1))
        interval = pts[i + 1] - pts[i] if last >= 1 else 1
        times.append(pts[i] + (position - i) * interval)
    # one exact time base for all of them, 1/n s: the source's, divided as finely as the times need
    source = Fraction(split.vfr_time_base_num, split.vfr_time_base_den)
    denominator = source.denominator
    for time in times:
        denominator = math.lcm(denominator, (time * source).denominator)
    base = Fraction(1, denominator)
    return base, [int(time * source / base) for time in times]


def remux_command(
    video: Path,
    source: Path,
    output: Path,
    source_streams: list[dict[str, Any]],
    *,
    timescale: int,
    rotation: int = 0,
    container: Container = "mp4",
) -> list[str]:
    """The ffmpeg argument list that muxes the video with the source's audio and subtitles, all copied.

    Every audio stream is copied packet for packet; every subtitle stream the container takes is
    mapped (text ones converted to its text format), each with its tags and its exact dispositions
    (set explicitly, so FFmpeg adds no `default` flag of its own). For MP4/MOV the video's timestamps
    pass unchanged (`timescale` is a multiple of their time base); Matroska keeps 1 ms ones.
    """
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y",
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
    command += ["-c:v", "copy", "-c:a", "copy"]
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
