"""Safe ffprobe of an uploaded file, mapped to `MediaProbe` or a `ProbeError` with a stable code.

The threat model is a hostile upload. ffprobe therefore only ever sees a LOCAL file whose name our code
chose (`file:` + an absolute path, so no key can become an option or a protocol), runs as an argument
list (never a shell) with `-protocol_whitelist file` and a demuxer whitelist (an HLS playlist or an
ffconcat script cannot open other files or URLs), bounded `probesize`/`analyzeduration`, a wall-clock
timeout, rlimits on CPU time, memory and file writes, and (where the machine allows a network
namespace) no network at all. Limits (pixels, frames × multiplier, streams,
frame rate) are checked on the cheap header probe before the packets are counted.

`map_probe` (pure) turns ffprobe's JSON into the checked `MediaProbe`; `probe_file` runs ffprobe.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import math
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from infiniteflow_common.errors import InfiniteFlowError
from infiniteflow_common.events import MediaProbe
from infiniteflow_common.timing import packets_at_constant_rate

FFPROBE = "ffprobe"
# util-linux (beside `unshare`): sets the rlimits in the child by exec, no Python between fork and exec
PRLIMIT = "prlimit"
# What the MOV demuxer says when a track's data reference points outside the file (not followed).
EXTERNAL_REFERENCE = "Skipped opening external track"


class ProbeError(InfiniteFlowError):
    """The upload is not a video we can process; `code` says why (permanent: the job fails)."""

    code = "E_PROBE_UNREADABLE"


@dataclass(frozen=True)
class ProbeLimits:
    """What ingest accepts and how hard ffprobe may work (see `IngestSettings`)."""

    allowed_formats: tuple[str, ...]
    max_width: int = 8192
    max_height: int = 8192
    max_output_frames: int = 2_000_000
    max_streams: int = 32
    min_fps: float = 1.0
    max_fps: float = 480.0
    timeout_s: float = 60.0
    probesize: int = 50_000_000
    analyzeduration_us: int = 20_000_000
    cpu_seconds: int = 120
    memory_bytes: int = 2 * 1024**3
    vfr_packets: int = 600
    # Command prefix that runs ffprobe without network access (see `network_jail`); () when off.
    jail: tuple[str, ...] = ()


# --- pure mapping ------------------------------------------------------------------------------------


def parse_rate(text: object) -> Fraction | None:
    """ffprobe's 'num/den' (or a plain number) → Fraction; None for '0/0', garbage or non-positive."""
    if not isinstance(text, str):
        return None
    num, _, den = text.partition("/")
    try:
        value = Fraction(int(num), int(den or "1"))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def bit_depth_of(pix_fmt: str, bits_per_raw_sample: object = None) -> int:
    """Bits per component of a pixel format (yuv420p10le → 10, p010le → 10, rgb48le → 16, nv12 → 8)."""
    if match := re.search(r"p(\d{1,2})(le|be)$", pix_fmt):
        return int(match[1])
    if match := re.match(r"^[pP]0?(\d\d)(le|be)?$", pix_fmt):
        return int(match[1])
    if re.match(r"^(rgb|bgr)48|^(rgba|bgra)64|^gray16|^ya16|^gbrap?16", pix_fmt):
        return 16
    if match := re.match(r"^gray(\d{1,2})(le|be)$", pix_fmt):
        return int(match[1])
    with contextlib.suppress(TypeError, ValueError):
        raw = int(str(bits_per_raw_sample))
        if 1 <= raw <= 32:
            return raw
    return 8


def rotation_of(stream: dict[str, Any]) -> int:
    """Display rotation in degrees (0, 90, 180, 270), counter-clockwise.

    This is the display matrix's angle exactly as ffprobe reports it (and as ffmpeg's
    `-display_rotation` sets it), normalised to 0–359; a legacy `rotate` tag (clockwise) without a
    display matrix is converted to the same convention.
    """
    degrees: float | None = None
    for side in stream.get("side_data_list") or []:
        if isinstance(side, dict) and "rotation" in side:
            with contextlib.suppress(TypeError, ValueError):
                degrees = float(side["rotation"])
    if degrees is None:
        with contextlib.suppress(TypeError, ValueError):
            degrees = -float((stream.get("tags") or {}).get("rotate", 0))
    if degrees is None or not math.isfinite(degrees):
        return 0
    return round(degrees / 90.0) * 90 % 360


def _tag(stream: dict[str, Any], name: str) -> str | None:
    value = stream.get(name)
    return str(value) if value not in (None, "", "unknown", "reserved", "unspecified") else None


def _float(*values: object) -> float | None:
    for value in values:
        with contextlib.suppress(TypeError, ValueError):
            number = float(str(value))
            if math.isfinite(number):
                return number
    return None


def _time_base(video: dict[str, Any]) -> Fraction:
    """The stream's time base ("1/15360"); 0 when ffprobe gave none."""
    with contextlib.suppress(TypeError, ValueError, ZeroDivisionError):
        return Fraction(str(video.get("time_base")))
    return Fraction(0)


def _int(value: object) -> int | None:
    with contextlib.suppress(TypeError, ValueError):
        return int(str(value))
    return None


def primary_video_stream(doc: dict[str, Any], limits: ProbeLimits) -> dict[str, Any]:
    """The first real video stream (cover art excluded), after the container-level checks."""
    streams = [s for s in doc.get("streams") or [] if isinstance(s, dict)]
    fmt = doc.get("format") or {}
    format_name = str(fmt.get("format_name") or "")
    if not set(format_name.split(",")) & set(limits.allowed_formats):
        raise ProbeError(
            f"container format {format_name[:60]!r} is not accepted; upload one of: "
            + ", ".join(limits.allowed_formats),
            code="E_PROBE_FORMAT_NOT_ALLOWED",
        )
    if len(streams) > limits.max_streams:
        raise ProbeError(
            f"the file has {len(streams)} streams; at most {limits.max_streams} are accepted",
            code="E_PROBE_TOO_MANY_STREAMS",
        )
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    if not videos:
        cover = any((s.get("disposition") or {}).get("attached_pic") for s in streams)
        kinds = sorted(
            {
                str(s.get("codec_type"))
                for s in streams
                if not (s.get("disposition") or {}).get("attached_pic")
            }
        ) or ["nothing else"]
        raise ProbeError(
            "the file has no video stream to interpolate (found: "
            + ", ".join(kinds)
            + (", cover art only" if cover else "")
            + "); upload a video",
            code="E_PROBE_NO_VIDEO",
        )
    video = videos[0]
    width, height = _int(video.get("width")) or 0, _int(video.get("height")) or 0
    if width <= 0 or height <= 0:
        raise ProbeError(
            "the video stream has no frame size; the file may be damaged", code="E_PROBE_UNREADABLE"
        )
    if width > limits.max_width or height > limits.max_height:
        raise ProbeError(
            f"the video is {width}×{height}; at most {limits.max_width}×{limits.max_height} is accepted",
            code="E_PROBE_TOO_LARGE",
        )
    nominal_fps(video, limits)
    return video


def nominal_fps(video: dict[str, Any], limits: ProbeLimits) -> tuple[Fraction, Fraction | None]:
    """(nominal rate, average rate or None); the nominal one falls back to the average when unusable."""
    r_rate, avg_rate = parse_rate(video.get("r_frame_rate")), parse_rate(video.get("avg_frame_rate"))

    def plausible(rate: Fraction | None) -> bool:
        return rate is not None and limits.min_fps <= rate <= limits.max_fps

    rate = r_rate if plausible(r_rate) else avg_rate if plausible(avg_rate) else None
    if rate is None:
        raise ProbeError(
            f"the frame rate {video.get('r_frame_rate')!r} (average {video.get('avg_frame_rate')!r}) is "
            f"missing or outside {limits.min_fps:g}–{limits.max_fps:g} fps; re-encode at a constant rate",
            code="E_PROBE_BAD_FRAME_RATE",
        )
    return rate, avg_rate if plausible(avg_rate) else None


def detect_vfr(pts: Sequence[int], tolerance: float = 0.01) -> bool | None:
    """Whether presentation timestamps (in stream time-base ticks) are unevenly spaced.

    Sorted first (B-frames arrive out of order); a one-tick jitter is rounding, not VFR. None when there
    are too few timestamps to tell.
    """
    ordered = sorted(set(pts))
    if len(ordered) < 3:
        return None
    deltas = [b - a for a, b in itertools.pairwise(ordered)]
    median = sorted(deltas)[len(deltas) // 2]
    return max(deltas) - min(deltas) > 1 + tolerance * median


def estimated_frames(video: dict[str, Any], fmt: dict[str, Any], rate: Fraction) -> int | None:
    """The header's frame count, or duration × rate; None when the header says neither."""
    frames = _int(video.get("nb_frames"))
    if frames is not None and frames > 0:
        return frames
    duration = _float(video.get("duration"), fmt.get("duration"))
    return math.ceil(duration * rate) if duration is not None and duration > 0 else None


def check_frame_budget(frames: int, factor: Fraction, limits: ProbeLimits) -> None:
    """Refuse jobs whose output (frames × multiplier) would exceed the budget: frame-count bombs."""
    out = math.ceil(frames * factor)
    if out > limits.max_output_frames:
        raise ProbeError(
            f"{frames} frames × {float(factor):g} = {out} output frames is over the limit of "
            f"{limits.max_output_frames}; upload a shorter clip or use a lower multiplier",
            code="E_PROBE_TOO_MANY_FRAMES",
        )


def map_probe(
    doc: dict[str, Any], limits: ProbeLimits, *, frame_count: int | None, pts: Sequence[int] = ()
) -> MediaProbe:
    """ffprobe's `-show_streams -show_format` JSON (+ counted packets, sampled pts) → checked MediaProbe."""
    video = primary_video_stream(doc, limits)
    fmt = doc.get("format") or {}
    streams = [s for s in doc.get("streams") or [] if isinstance(s, dict)]
    rate, avg_rate = nominal_fps(video, limits)
    frames = frame_count if frame_count is not None else estimated_frames(video, fmt, rate) or 0
    if frames < 2:
        raise ProbeError(
            f"the video has {frames} frame(s); interpolation needs at least 2", code="E_PROBE_SINGLE_FRAME"
        )
    vfr = detect_vfr(pts)
    if vfr is None:  # too few timestamps: the rates' disagreement is the only hint left
        vfr = avg_rate is not None and abs(float(avg_rate - rate)) > 0.01 * float(rate)
    duration = _float(video.get("duration"), fmt.get("duration"))
    if duration is None or duration <= 0:
        duration = float(frames / (avg_rate or rate))
    average = avg_rate or Fraction(0)
    audio = sum(1 for s in streams if s.get("codec_type") == "audio")
    return MediaProbe(
        format_name=str(fmt.get("format_name")),
        video_codec=str(video.get("codec_name") or "unknown"),
        width=int(video["width"]),
        height=int(video["height"]),
        pix_fmt=str(video.get("pix_fmt") or "unknown"),
        bit_depth=bit_depth_of(str(video.get("pix_fmt") or ""), video.get("bits_per_raw_sample")),
        fps_num=rate.numerator,
        fps_den=rate.denominator,
        avg_fps_num=average.numerator if average else 0,
        avg_fps_den=average.denominator if average else 0,
        frame_count=frames,
        duration_s=round(duration, 6),
        start_time_s=_float(video.get("start_time"), fmt.get("start_time")) or 0.0,
        is_vfr=vfr,
        rotation=rotation_of(video),
        color_range=_tag(video, "color_range"),
        color_space=_tag(video, "color_space"),
        color_transfer=_tag(video, "color_transfer"),
        color_primaries=_tag(video, "color_primaries"),
        has_audio=audio > 0,
        audio_streams=audio,
        subtitle_streams=sum(1 for s in streams if s.get("codec_type") == "subtitle"),
    )


def classify_failure(stderr: str) -> ProbeError:
    """A failed ffprobe run → the most specific error its log supports."""
    refused = re.search(r"\[([A-Za-z0-9_,]{1,40}) @ [^\]]*\] Format not on whitelist", stderr)
    if refused:
        return ProbeError(
            f"the file is a {refused[1]!r} file, which is not accepted; upload a video container "
            "(MP4/MOV, Matroska/WebM, AVI, MPEG-TS, FLV or Ogg)",
            code="E_PROBE_FORMAT_NOT_ALLOWED",
        )
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no details")
    # Our own scratch path is in ffprobe's log; the user only needs the reason after it.
    reason = last.rsplit(": ", 1)[-1][:200]
    return ProbeError(
        f"the file is not a readable video ({reason}); check that the upload is complete and a video",
        code="E_PROBE_UNREADABLE",
    )


# --- running ffprobe ---------------------------------------------------------------------------------


JAILS: tuple[tuple[str, ...], ...] = (
    ("unshare", "--net", "--"),  # root: a new, empty network namespace
    ("unshare", "--user", "--map-root-user", "--net", "--"),  # unprivileged user namespaces
)


@functools.cache
def network_jail() -> tuple[str, ...]:
    """The first way this machine allows to run a command with no network at all; () when none does.

    Belt and braces: the protocol whitelist already keeps ffprobe from opening URLs, and a namespace
    with only a downed loopback means even a demuxer bug cannot reach the network or local services.
    """
    for jail in JAILS:
        if shutil.which(jail[0]) is None:
            continue
        try:
            done = subprocess.run([*jail, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return jail
    return ()


def limited(limits: ProbeLimits, command: Sequence[str]) -> list[str]:
    """`command` run under `prlimit` with the probe's CPU, memory, file-size and core-dump limits.

    Set by a program exec'd in the child, not by a `preexec_fn`: Python code between fork and exec is
    unsafe in a process with threads (the event loop's executor, database and Kafka clients), where a
    lock held by another thread at the fork never comes free in the child.
    """
    return [
        PRLIMIT,
        f"--cpu={limits.cpu_seconds}",
        f"--as={limits.memory_bytes}",
        "--fsize=0",
        "--core=0",
        "--",
        *command,
    ]


async def run_ffprobe(
    path: Path, extra: Sequence[str], limits: ProbeLimits, *, log_level: str = "error"
) -> tuple[dict[str, Any], str]:
    """Run ffprobe on `path` with the safety options and `extra`: (its JSON, its log) or a `ProbeError`."""
    process = await _start_ffprobe(path, ["-of", "json", *extra], limits, log_level)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=limits.timeout_s)
    except TimeoutError:
        await _kill(process)
        raise _timed_out(limits) from None
    text = stderr.decode("utf-8", "replace")
    _check_exit(process, text)
    try:
        doc = json.loads(stdout or b"{}")
    except json.JSONDecodeError as exc:
        raise ProbeError(f"ffprobe gave unparseable output ({exc})", code="E_PROBE_UNREADABLE") from exc
    if not isinstance(doc, dict):
        raise ProbeError("ffprobe gave unexpected output", code="E_PROBE_UNREADABLE")
    return doc, text


async def _start_ffprobe(
    path: Path, extra: Sequence[str], limits: ProbeLimits, log_level: str
) -> asyncio.subprocess.Process:
    """ffprobe on `path` with the safety options (protocols, formats, probe sizes, rlimits, jail)."""
    args = [
        FFPROBE,
        "-hide_banner",
        "-v",
        log_level,
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        ",".join(limits.allowed_formats),
        "-probesize",
        str(limits.probesize),
        "-analyzeduration",
        str(limits.analyzeduration_us),
        *extra,
        f"file:{path}",  # absolute (checked by probe_file): never an option, never a protocol
    ]
    return await asyncio.create_subprocess_exec(
        *limits.jail,
        *limited(limits, args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()


def _timed_out(limits: ProbeLimits) -> ProbeError:
    return ProbeError(
        f"probing took longer than {limits.timeout_s:g} s; the file may be damaged or built to stall readers",
        code="E_PROBE_TIMEOUT",
    )


def _check_exit(process: asyncio.subprocess.Process, log: str) -> None:
    if process.returncode == 0:
        return
    if process.returncode in (-9, -24):  # SIGKILL / SIGXCPU from the rlimits
        raise ProbeError(
            "probing exceeded its CPU or memory limit; the file may be built to exhaust readers",
            code="E_PROBE_TIMEOUT",
        )
    raise classify_failure(log)


async def packet_timestamps(
    path: Path, stream_index: str, limits: ProbeLimits, *, max_packets: int
) -> list[int | None]:
    """Every packet's timestamp of one stream (None where a packet has none), in one pass over the file.

    The count is the frame count (what `-count_packets` gave), the timestamps say whether the whole
    stream is at one constant rate. Read line by line as ffprobe prints them: a file built with
    millions of tiny packets is refused past `max_packets` (E_PROBE_TOO_MANY_FRAMES) instead of
    filling the service's memory with ffprobe's output.
    """
    process = await _start_ffprobe(
        path,
        ["-select_streams", stream_index, "-show_entries", "packet=pts", "-of", "csv=p=0"],
        limits,
        "error",
    )
    assert process.stdout is not None
    assert process.stderr is not None
    pts: list[int | None] = []

    async def read_lines() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            value = line.strip().rstrip(b",")
            pts.append(int(value) if value.lstrip(b"-").isdigit() else None)
            if len(pts) > max_packets:
                await _kill(process)
                raise ProbeError(
                    f"the video has more than {max_packets} frames; upload a shorter clip",
                    code="E_PROBE_TOO_MANY_FRAMES",
                )

    try:
        _, log = await asyncio.wait_for(
            asyncio.gather(read_lines(), process.stderr.read()), timeout=limits.timeout_s
        )
        await process.wait()
    except TimeoutError:
        await _kill(process)
        raise _timed_out(limits) from None
    except ProbeError:
        await _kill(process)
        raise
    _check_exit(process, log.decode("utf-8", "replace"))
    return pts


async def probe_file(path: Path, limits: ProbeLimits, *, frame_factor: Fraction | None = None) -> MediaProbe:
    """Probe a local file safely; `frame_factor` (the multiplier) bounds frames × factor when known."""
    probe, _ = await probe_source(path, limits, frame_factor=frame_factor)
    return probe


async def probe_source(
    path: Path, limits: ProbeLimits, *, frame_factor: Fraction | None = None
) -> tuple[MediaProbe, list[dict[str, Any]]]:
    """`probe_file`, plus ffprobe's stream list (for the output container decision).

    Two ffprobe runs: the header (cheap: all structural limits are checked here, including an estimate
    of the frame budget), then every packet timestamp of the video stream (`packet_timestamps`: the
    frame count, VFR detection on the first ones, and whether the whole stream is at a constant rate,
    which lets the splitter plan while it reads); with audio a third reads the last seconds of its
    packets for end trimming (`mark_end_padding`).
    """
    if not path.is_absolute():
        raise ValueError(f"probe_file needs an absolute path, got {path}")
    size = (await asyncio.to_thread(path.stat)).st_size
    if size == 0:
        raise ProbeError("the file is empty (0 bytes); upload the video again", code="E_PROBE_EMPTY")
    doc, header_log = await run_ffprobe(path, ["-show_streams", "-show_format"], limits, log_level="warning")
    if EXTERNAL_REFERENCE in header_log:
        raise ProbeError(
            "the file keeps its media in other files (a QuickTime reference movie); those are never "
            "opened: export the video self-contained and upload it again",
            code="E_PROBE_EXTERNAL_REFERENCE",
        )
    if not doc.get("format"):
        raise ProbeError("ffprobe found no container in the file", code="E_PROBE_UNREADABLE")
    video = primary_video_stream(doc, limits)
    rate, _ = nominal_fps(video, limits)
    estimate = estimated_frames(video, doc.get("format") or {}, rate)
    if frame_factor is not None and estimate is not None:
        check_frame_budget(estimate, frame_factor, limits)
    index = str(int(video.get("index", 0)))
    every_pts = await packet_timestamps(path, index, limits, max_packets=limits.max_output_frames)
    leading = [p for p in every_pts[: limits.vfr_packets] if p is not None]
    probe = map_probe(doc, limits, frame_count=len(every_pts), pts=leading)
    probe = probe.model_copy(
        update={"packets_constant_rate": packets_at_constant_rate(every_pts, _time_base(video))}
    )
    if frame_factor is not None:
        check_frame_budget(probe.frame_count, frame_factor, limits)
    streams = [s for s in doc.get("streams") or [] if isinstance(s, dict)]
    if any(s.get("codec_type") == "audio" for s in streams):
        tail, _ = await run_ffprobe(
            path,
            ["-select_streams", "a", "-show_entries", "packet=stream_index:packet_side_data=discard_padding",
             "-read_intervals", f"{max(0.0, probe.start_time_s + probe.duration_s - END_WINDOW_S):.3f}%"],
            limits,
        )  # fmt: skip
        mark_end_padding(streams, tail)
    return probe, streams


END_WINDOW_S = 3.0
"""How much of the end of the audio is read for its end trimming (the last packets carry it)."""


def mark_end_padding(streams: list[dict[str, Any]], packets: dict[str, Any]) -> None:
    """Mark each audio stream whose last packets say to drop samples at its end (Matroska/WebM
    `DiscardPadding`: Opus's final frame is padded) with `discard_padding` (samples, pure).

    The output container decision needs it: FFmpeg 5.1 plays MP4's end-of-stream trim (the edit
    list's end) in full, so such audio decodes to other samples in MP4 than in its source.
    """
    by_index = {_int(s.get("index")): s for s in streams}
    for packet in packets.get("packets") or []:
        for side in packet.get("side_data_list") or []:
            padding = _int(side.get("discard_padding")) if isinstance(side, dict) else None
            stream = by_index.get(_int(packet.get("stream_index")))
            if padding and padding > 0 and stream is not None:
                stream["discard_padding"] = padding


def limits_from(settings: Any) -> ProbeLimits:
    """`ProbeLimits` from `IngestSettings` (duck-typed to keep this module free of service config)."""
    return ProbeLimits(
        allowed_formats=tuple(settings.allowed_formats),
        max_width=settings.max_width,
        max_height=settings.max_height,
        max_output_frames=settings.max_output_frames,
        max_streams=settings.max_streams,
        min_fps=settings.min_fps,
        max_fps=settings.max_fps,
        timeout_s=settings.probe_timeout_s,
        probesize=settings.probe_probesize,
        analyzeduration_us=settings.probe_analyzeduration_us,
        cpu_seconds=settings.probe_cpu_seconds,
        memory_bytes=settings.probe_memory_bytes,
        vfr_packets=settings.probe_vfr_packets,
        jail=_jail_for(settings.probe_network_isolation),
    )


def _jail_for(mode: str) -> tuple[str, ...]:
    if mode == "off":
        return ()
    jail = network_jail()
    if not jail and mode == "required":
        raise RuntimeError(
            "PROBE_NETWORK_ISOLATION=required, but this machine allows no network namespace "
            "(unshare --net failed as root and with a user namespace)"
        )
    return jail
