"""The final encode: interpolated chunks in order + the source's audio and subtitles, untouched.

The video is encoded with the job's encoder (libx264 by default; libx265, libsvtav1 or libaom-av1
when asked), keeping the source's bit depth where the encoder can, its colour signalling (primaries,
transfer, matrix, range) and, for HEVC and SVT-AV1, its HDR10 static metadata (mastering display
and content light level), which the lossless intermediates do not carry and is read from the
source's first frame. libx264 and libaom-av1 here cannot write that metadata; their output keeps
the colour signalling only.

FFmpeg does the muxing: it interleaves, keeps audio priming and edit lists right, and copies the audio
packets bit-exact. Every path it sees is a file name we chose inside our scratch folder, every input is
restricted to the file protocol, and the arguments are a list (no shell).
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
from infiniteflow_common.media import LosslessWriter, decode_video
from infiniteflow_common.output import DEFAULT_CRF, DEFAULT_PRESET

# Pixel formats libx264 encodes as they are; others map to the nearest by depth and chroma.
X264_FORMATS = {
    "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv16", "nv21",
    "yuv420p10le", "yuv422p10le", "yuv444p10le", "nv20le", "gray", "gray10le",
}  # fmt: skip
# What each encoder takes as it is (`ffmpeg -h encoder=…`); others map to the nearest by depth.
ENCODER_FORMATS: dict[str, set[str]] = {
    "libx264": X264_FORMATS,
    "libx265": {
        "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv420p10le", "yuv422p10le",
        "yuv444p10le", "yuv420p12le", "yuv422p12le", "yuv444p12le", "gray", "gray10le", "gray12le",
    },
    "libsvtav1": {"yuv420p", "yuv420p10le"},
    "libaom-av1": {
        "yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le", "yuv420p12le",
        "yuv422p12le", "yuv444p12le", "gray", "gray10le", "gray12le",
    },
}  # fmt: skip
TEXT_SUBTITLES = {"mov_text", "subrip", "srt", "ass", "ssa", "webvtt", "text"}


class MuxError(InfiniteFlowError):
    """FFmpeg could not assemble the output."""

    code = "E_MUX_FAILED"
    media_failure = True  # counted in infiniteflow_ffmpeg_failures_total


XY = tuple[Fraction, Fraction]


@dataclass(frozen=True)
class Mastering:
    """A mastering display: G, B, R primaries and white point (CIE 1931 xy), luminance in cd/m²."""

    green: XY
    blue: XY
    red: XY
    white: XY
    max_luminance: Fraction
    min_luminance: Fraction


@dataclass(frozen=True)
class HdrMetadata:
    """HDR10 static metadata: the mastering display and the content light levels, each when known."""

    mastering: Mastering | None = None
    max_cll: int | None = None
    max_fall: int | None = None


@dataclass(frozen=True)
class OutputSpec:
    """What the output must look like."""

    rate: Fraction
    pix_fmt: str
    rotation: int
    color_range: str | None
    color_space: str | None
    color_transfer: str | None
    color_primaries: str | None
    crf: int | None
    preset: str | None
    encoder: str = "libx264"
    bitrate: int | None = None
    hdr: HdrMetadata | None = None


def encoder_pix_fmt(source: str, encoder: str = "libx264") -> str:
    """The source's pixel format when the encoder takes it, else the closest one it does by depth."""
    if source in ENCODER_FORMATS.get(encoder, X264_FORMATS):
        return source
    deep = any(tag in source for tag in ("10", "12", "16", "48", "64"))
    return "yuv420p10le" if deep else "yuv420p"


def _fraction(value: Any) -> Fraction | None:
    try:
        return Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None


def hdr_of(side_data: list[dict[str, Any]]) -> HdrMetadata | None:
    """HDR10 static metadata from ffprobe `side_data_list` entries (stream or frame); None if absent."""
    mastering: Mastering | None = None
    light: dict[str, int] = {}
    for item in side_data:
        kind = item.get("side_data_type")
        if kind == "Mastering display metadata":
            names = ("green", "blue", "red", "white_point")
            values = [_fraction(item.get(f"{n}_{axis}")) for n in names for axis in "xy"]
            values += [_fraction(item.get("max_luminance")), _fraction(item.get("min_luminance"))]
            known = [v for v in values if v is not None]
            if len(known) == len(values):  # encoders take the whole display or none of it
                green, blue, red, white = ((known[i], known[i + 1]) for i in range(0, 8, 2))
                mastering = Mastering(green, blue, red, white, max_luminance=known[8], min_luminance=known[9])
        elif kind == "Content light level metadata":
            light = {
                "max_cll": int(item.get("max_content") or 0),
                "max_fall": int(item.get("max_average") or 0),
            }
    if mastering is None and not light:
        return None
    return HdrMetadata(mastering=mastering, **light)


def probe_hdr(path: Path, streams: list[dict[str, Any]], timeout_s: float = 60.0) -> HdrMetadata | None:
    """The source's HDR10 metadata: its video stream's side data, else its first frame's (SEI)."""
    video = next((s for s in streams if s.get("codec_type") == "video"), {})
    found = hdr_of(video.get("side_data_list", []))
    if found is not None:
        return found
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-select_streams", "v:0", "-read_intervals",
         "%+#1", "-show_frames", "-show_entries", "frame=side_data_list", "-of", "json", "file:" + str(path)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return None
    frames = json.loads(result.stdout).get("frames") or [{}]
    return hdr_of(frames[0].get("side_data_list", []))


def _x265_hdr(hdr: HdrMetadata) -> list[str]:
    """x265's `master-display` (xy in 1/50000, luminance in 1/10000 cd/m²) and `max-cll`."""
    params = []
    if (m := hdr.mastering) is not None:
        xy = [f"({round(x * 50000)},{round(y * 50000)})" for x, y in (m.green, m.blue, m.red, m.white)]
        luminance = f"L({round(m.max_luminance * 10000)},{round(m.min_luminance * 10000)})"
        params.append(f"master-display=G{xy[0]}B{xy[1]}R{xy[2]}WP{xy[3]}{luminance}")
    if hdr.max_cll is not None:
        params.append(f"max-cll={hdr.max_cll},{hdr.max_fall or 0}")
    return params


def _svtav1_hdr(hdr: HdrMetadata) -> list[str]:
    """SVT-AV1's `mastering-display` (decimal xy and cd/m²) and `content-light`."""
    params = []
    if (m := hdr.mastering) is not None:
        xy = [f"({float(x):.4f},{float(y):.4f})" for x, y in (m.green, m.blue, m.red, m.white)]
        luminance = f"L({float(m.max_luminance):.4f},{float(m.min_luminance):.4f})"
        params.append(f"mastering-display=G{xy[0]}B{xy[1]}R{xy[2]}WP{xy[3]}{luminance}")
    if hdr.max_cll is not None:
        params.append(f"content-light={hdr.max_cll},{hdr.max_fall or 0}")
    return params


def video_codec_args(spec: OutputSpec) -> list[str]:
    """`-c:v` and its rate control, preset and HDR metadata for the spec's encoder."""
    encoder = spec.encoder
    args = ["-c:v", encoder]
    if encoder == "libaom-av1":
        args += ["-cpu-used", spec.preset or DEFAULT_PRESET[encoder], "-row-mt", "1"]
    elif spec.preset is not None or encoder in DEFAULT_PRESET:
        args += ["-preset", spec.preset or DEFAULT_PRESET[encoder]]
    if spec.bitrate is not None:
        args += ["-b:v", str(spec.bitrate)]
    else:
        crf = spec.crf if spec.crf is not None else DEFAULT_CRF.get(encoder, 23)
        args += ["-crf", str(crf)]
        if encoder == "libaom-av1":
            args += ["-b:v", "0"]  # constant quality: CRF alone, no bitrate cap
    args += ["-pix_fmt", encoder_pix_fmt(spec.pix_fmt, encoder)]
    hdr = spec.hdr
    if encoder == "libx265":
        # x265 writes its own VUI from these, and the SEI from master-display / max-cll
        params = ["log-level=error"] + ([] if hdr is None else _x265_hdr(hdr))
        args += ["-x265-params", ":".join(params), "-tag:v", "hvc1"]
    elif encoder == "libsvtav1" and hdr is not None and (hdr_params := _svtav1_hdr(hdr)):
        args += ["-svtav1-params", ":".join(hdr_params)]
    return args


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


def measure_output(path: Path, timeout_s: float = 120.0) -> OutputTiming:
    """Frame count and stream ends of the finished output (ffprobe counts the video packets)."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-count_packets", "-of", "json",
         "-show_streams", "file:" + str(path)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise MuxError(f"ffprobe could not read the output: {result.stderr.strip()[-300:]}")
    return timing_of(json.loads(result.stdout))


def output_times(plan: dict[str, Any]) -> tuple[Fraction, list[int]] | None:
    """For variable-rate input kept variable: (time base, every output frame's timestamp in it).

    Output frame k sits at position p = k · in_rate / out_rate on the input's frame index; between
    input frames i and i + 1 its time is ts(i) + (p − i) · (ts(i + 1) − ts(i)), so every input frame
    keeps its own timestamp and the frames a multiplier adds are spread evenly inside each interval.
    Past the last input frame the last interval repeats. None when the plan is constant-rate.
    """
    if not plan.get("vfr_kept"):
        return None
    pts = [int(p) for p in plan["pts"]]
    step = Fraction(plan["in_rate"]) / Fraction(plan["out_rate"])
    times: list[Fraction] = []
    last = len(pts) - 1
    for k in range(int(plan["out_frames"])):
        position = k * step
        i = min(int(position), max(0, last - 1))
        interval = pts[i + 1] - pts[i] if last >= 1 else 1
        times.append(pts[i] + (position - i) * interval)
    # one exact time base for all of them, 1/n s: the source's, divided as finely as the times need
    source = Fraction(plan["time_base"])
    denominator = source.denominator
    for time in times:
        denominator = math.lcm(denominator, (time * source).denominator)
    base = Fraction(1, denominator)
    return base, [int(time * source / base) for time in times]


def restamp(chunks: list[Path], output: Path, base: Fraction, pts: list[int]) -> None:
    """Write the chunks' frames, in order, to a lossless file whose frame k is at `pts[k]` × `base`."""
    writer: LosslessWriter | None = None
    count = 0
    try:
        for chunk in chunks:
            for frame in decode_video(chunk):
                if count >= len(pts):
                    raise MuxError(
                        f"the chunks hold more frames than the plan's {len(pts)}", code="E_MUX_FRAME_COUNT"
                    )
                if writer is None:
                    writer = LosslessWriter(
                        output, width=frame.width, height=frame.height, pix_fmt=frame.format.name,
                        rate=Fraction(1, 1), time_base=base,
                    )  # fmt: skip
                writer.write(frame, pts=pts[count])
                count += 1
        if count != len(pts):
            raise MuxError(f"the chunks hold {count} frames, the plan {len(pts)}", code="E_MUX_FRAME_COUNT")
    finally:
        if writer is not None:
            writer.close()


def build_command(
    concat_list: Path,
    source: Path,
    output: Path,
    spec: OutputSpec,
    source_streams: list[dict[str, Any]],
    *,
    timed_video: Path | None = None,
    time_base: Fraction | None = None,
) -> list[str]:
    """The ffmpeg argument list for the final encode.

    By default the video is the chunk list, stamped at exactly `spec.rate`. With `timed_video` (a file
    whose frames carry their own timestamps in `time_base`) those timestamps pass through unchanged.
    """
    rate = f"{spec.rate.numerator}/{spec.rate.denominator}"
    video = (
        ["-protocol_whitelist", "file", "-i", "file:" + str(timed_video)]
        if timed_video is not None
        else ["-f", "concat", "-safe", "0", "-protocol_whitelist", "file", "-i", "file:" + str(concat_list)]
    )
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y",
        *video,
        "-protocol_whitelist", "file", "-i", "file:" + str(source),
        "-map", "0:v:0", "-map", "1:a?",
    ]  # fmt: skip
    subtitle_codecs = [s.get("codec_name") for s in source_streams if s.get("codec_type") == "subtitle"]
    if subtitle_codecs and all(codec in TEXT_SUBTITLES for codec in subtitle_codecs):
        command += ["-map", "1:s?"]
        command += ["-c:s", "copy"] if all(c == "mov_text" for c in subtitle_codecs) else ["-c:s", "mov_text"]
    command += ["-map_metadata", "1", "-map_chapters", "1"]
    if timed_video is not None and time_base is not None:
        # every frame keeps its timestamp: no rate forced, the encoder counts in the input's time base
        command += ["-fps_mode", "passthrough", "-enc_time_base", "-1"]
        command += ["-video_track_timescale", str(time_base.denominator)]
    else:
        # frame n shows at n / rate exactly, whatever the intermediates' timestamps were
        command += ["-vf", f"setpts=N*{spec.rate.denominator}/({spec.rate.numerator}*TB)"]
        command += ["-r", rate, "-video_track_timescale", str(track_timescale(spec.rate))]
    command += [
        *video_codec_args(spec),
        "-c:a", "copy",
        "-movflags", "+faststart",
    ]  # fmt: skip
    for flag, value in (
        ("-color_range", spec.color_range),
        ("-colorspace", spec.color_space),
        ("-color_trc", spec.color_transfer),
        ("-color_primaries", spec.color_primaries),
    ):
        if value and value != "unknown":
            command += [flag, value]
    command.append("file:" + str(output))
    return command


def rotation_command(encoded: Path, output: Path, rotation: int) -> list[str]:
    """Remux `encoded` with the source's display rotation (FFmpeg 5.1 sets it only when stream-copying).

    `rotation` is the display-matrix angle ffprobe reports; the `rotate` tag written here reads back
    as that same angle.
    """
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y",
        "-protocol_whitelist", "file", "-i", "file:" + str(encoded),
        "-map", "0", "-c", "copy", "-map_metadata", "0",
        "-metadata:s:v:0", f"rotate={rotation % 360}", "-movflags", "+faststart", "file:" + str(output),
    ]  # fmt: skip


def write_concat_list(path: Path, chunks: list[Path]) -> None:
    """An ffconcat script naming our own chunk files, in order."""
    lines = ["ffconcat version 1.0"]
    for chunk in chunks:
        lines.append("file '" + str(chunk).replace("'", "'\\''") + "'")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


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
