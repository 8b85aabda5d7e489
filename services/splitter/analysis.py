"""The splitter's one pass over the source: frame timestamps, scene cuts, VFR and duplicated frames.

The frames are decoded once and only looked at downscaled (the scene detector and the duplicate test
see a small image); nothing is written. Decoding reads a local file, restricted to the file protocol.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from infiniteflow_common.media import MediaError, decode_video, rational
from services.splitter.cfr import average_rate, cfr_sources, is_variable
from services.splitter.duplicates import DuplicateDetector, kept_frames, kept_scene_starts
from services.splitter.scenes import Downscaler, SceneCuts


@dataclass(frozen=True)
class AnalysisSettings:
    """How cuts and duplicates are found."""

    scene_threshold: float
    scene_min_frames: int
    scene_width: int
    dedupe_threshold: float


@dataclass(frozen=True)
class Analysis:
    """What the pass learned: which decoded frame each planned frame is, scene starts, rate, timing."""

    rate: Fraction
    source_of: list[int]  # planning frame index → decoded frame index
    scene_starts: list[int]
    vfr_converted: bool
    # Each decoded frame's presentation timestamp in `stream_time_base` (None: the stream has none).
    frame_pts: list[int | None]
    stream_time_base: Fraction
    # Decoded indices of the frames the decoder marked as keyframes (random-access points), ascending:
    # where a worker's decode may begin (`decode_start`).
    keyframes: tuple[int, ...]
    width: int
    height: int
    pix_fmt: str
    # With duplicates skipped: each planning frame's position on the input timeline (in frames) and
    # the input's frame count; None / 0 when every frame is planned.
    positions: list[Fraction] | None = None
    input_frames: int = 0
    # Variable-rate input kept as it is: every decoded frame's timestamp in ticks of `time_base`,
    # from the first frame (the muxer stamps the output between them); None when constant.
    pts: list[int] | None = None
    time_base: Fraction | None = None


def decode_start(analysis: Analysis, first: int) -> int | None:
    """The pts of the frame a decode must begin at for decoded frame `first` to come out whole.

    That is the last keyframe at or before `first` in presentation order: its GOP holds `first`, or
    `first` is a leading frame of the next GOP (open GOP: shown before that GOP's keyframe, decoded
    after it, predicted from this GOP), which a decode started here also reaches whole. None when the
    stream has no usable timestamps or no keyframe precedes `first`: decode from the start.
    """
    at = bisect.bisect_right(analysis.keyframes, first) - 1
    if at < 0:
        return None
    return analysis.frame_pts[analysis.keyframes[at]]


def analyse(
    source: Path,
    num: int,
    den: int,
    settings: AnalysisSettings,
    *,
    dedupe: bool = False,
    keep_vfr: bool = False,
) -> Analysis:
    """Timestamps, VFR detection, scene cuts and (when asked) duplicated frames of `source`."""
    duplicates = DuplicateDetector(settings.dedupe_threshold) if dedupe else None
    analysis = _analyse_timing(source, num, den, settings, duplicates, keep_vfr)
    if duplicates is None:
        return analysis
    kept = kept_frames(analysis.source_of, duplicates.distinct)
    if len(kept) < 2 or len(kept) == len(analysis.source_of):
        return analysis  # a still image, or nothing repeated: plan every frame
    return replace(
        analysis,
        source_of=[analysis.source_of[c] for c in kept],
        scene_starts=kept_scene_starts(analysis.scene_starts, kept),
        positions=[Fraction(c) for c in kept],
        input_frames=len(analysis.source_of),
    )


def _analyse_timing(
    source: Path,
    num: int,
    den: int,
    settings: AnalysisSettings,
    duplicates: DuplicateDetector | None,
    keep_vfr: bool,
) -> Analysis:
    rate = rational(num, den)
    timestamps: list[Fraction] = []
    frame_pts: list[int | None] = []
    keyframes: list[int] = []
    time_base: Fraction | None = None
    width = height = 0
    pix_fmt = ""
    cuts = SceneCuts(rate, settings.scene_threshold, settings.scene_min_frames)
    small_bgr = Downscaler(settings.scene_width)
    index = -1
    for index, frame in enumerate(decode_video(source)):
        if index == 0:
            width, height, pix_fmt = frame.width, frame.height, frame.format.name
        time_base = time_base or (Fraction(frame.time_base) if frame.time_base else None)
        frame_pts.append(frame.pts)
        if frame.key_frame:
            keyframes.append(index)
        timestamps.append(
            Fraction(frame.pts or 0) * Fraction(frame.time_base or 0)
            if frame.pts is not None
            else Fraction(index) / rate
        )
        small = small_bgr(frame)
        cuts.feed(index, small)
        if duplicates is not None:
            duplicates.feed(small)
    if index < 0:
        raise MediaError("the video stream has no decodable frame", code="E_MEDIA_NO_FRAMES")
    if any(p is None for p in frame_pts) or len(set(frame_pts)) != len(frame_pts):
        frame_pts = [None] * len(frame_pts)  # no usable timestamps: workers count frames instead
    starts = cuts.finish(index)
    constant = Analysis(
        rate=rate,
        source_of=list(range(len(timestamps))),
        scene_starts=starts,
        vfr_converted=False,
        frame_pts=frame_pts,
        stream_time_base=time_base or 1 / rate,
        keyframes=tuple(keyframes),
        width=width,
        height=height,
        pix_fmt=pix_fmt,
    )
    if not is_variable(timestamps):
        return constant
    # Containers often misreport a VFR stream's average (Matroska says the nominal rate): measure it.
    rate = average_rate(timestamps)
    if keep_vfr and time_base:
        ticks = [(ts - timestamps[0]) / time_base for ts in timestamps]
        if all(t.denominator == 1 and t >= 0 for t in ticks) and ticks == sorted(set(ticks)):
            return replace(constant, rate=rate, pts=[int(t) for t in ticks], time_base=time_base)
    source_of = cfr_sources(timestamps, rate)
    first_cfr: dict[int, int] = {}
    for cfr_index, decoded in enumerate(source_of):
        first_cfr.setdefault(decoded, cfr_index)
    cfr_starts = sorted({first_cfr[s] for s in starts if s in first_cfr})
    return replace(constant, rate=rate, source_of=source_of, scene_starts=cfr_starts, vfr_converted=True)
