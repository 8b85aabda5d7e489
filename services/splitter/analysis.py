"""The splitter's one pass over the source: frame timestamps, scene cuts, VFR and duplicated frames.

The frames are decoded once and only looked at downscaled (the scene detector and the duplicate test
see a small image); nothing is written. Decoding reads a local file, restricted to the file protocol.
"""

from __future__ import annotations

import bisect
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from infiniteflow_common.media import MediaError, decode_video, rational
from infiniteflow_common.remote_media import Source, ffprobe_input, open_source
from infiniteflow_common.timing import packets_at_constant_rate
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
    source_of: Sequence[int]  # planning frame index → decoded frame index
    scene_starts: Sequence[int]
    vfr_converted: bool
    # Each decoded frame's presentation timestamp in `stream_time_base` (None: the stream has none).
    frame_pts: Sequence[int | None]
    stream_time_base: Fraction
    # Decoded indices of the frames the decoder marked as keyframes (random-access points), ascending:
    # where a worker's decode may begin (`decode_start`).
    keyframes: Sequence[int]
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
    return analysis if duplicates is None else skip_duplicates(analysis, duplicates)


def skip_duplicates(analysis: Analysis, duplicates: DuplicateDetector) -> Analysis:
    """The analysis with the repeated frames `duplicates` found left out of the plan."""
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
    timing = TimingPass(rational(num, den), settings, duplicates)
    for frame in decode_video(source):
        timing.feed(frame)
    return timing.finish(keep_vfr=keep_vfr)


class TimingPass:
    """The pass's state, one decoded frame at a time: timestamps, keyframes, scene cuts, duplicates.

    `known()` and `so_far()` let a caller plan chunks while the pass runs (`ChunkStream`); `finish`
    gives the whole `Analysis`.
    """

    def __init__(
        self, rate: Fraction, settings: AnalysisSettings, duplicates: DuplicateDetector | None = None
    ) -> None:
        self.rate = rate
        self.timestamps: list[Fraction] = []
        self.frame_pts: list[int | None] = []
        self.keyframes: list[int] = []
        self.time_base: Fraction | None = None
        self.width = self.height = 0
        self.pix_fmt = ""
        self.cuts = SceneCuts(rate, settings.scene_threshold, settings.scene_min_frames)
        # A cut is reported up to the detector's minimum scene length after the frame it starts at.
        self.lookahead = 2 * settings.scene_min_frames + 2
        self._small_bgr = Downscaler(settings.scene_width)
        self._duplicates = duplicates

    @property
    def frames(self) -> int:
        """Frames fed so far."""
        return len(self.frame_pts)

    def feed(self, frame: Any) -> None:
        """Look at the next decoded frame (presentation order)."""
        index = len(self.frame_pts)
        if index == 0:
            self.width, self.height, self.pix_fmt = frame.width, frame.height, frame.format.name
        self.time_base = self.time_base or (Fraction(frame.time_base) if frame.time_base else None)
        self.frame_pts.append(frame.pts)
        if frame.key_frame:
            self.keyframes.append(index)
        self.timestamps.append(
            Fraction(frame.pts or 0) * Fraction(frame.time_base or 0)
            if frame.pts is not None
            else Fraction(index) / self.rate
        )
        small = self._small_bgr(frame)
        self.cuts.feed(index, small)
        if self._duplicates is not None:
            self._duplicates.feed(small)

    def known(self) -> int:
        """Frames [0, known) are final: no scene cut before `known` can still be reported."""
        return max(0, self.frames - self.lookahead)

    def so_far(self) -> Analysis:
        """The constant-rate analysis of the frames fed so far, for chunks planned before the pass ends.

        It shares the pass's lists (no copy per chunk): read it before feeding the next frame.
        """
        return Analysis(
            rate=self.rate,
            source_of=range(self.frames),
            scene_starts=self.cuts.starts,
            vfr_converted=False,
            frame_pts=self.frame_pts,
            stream_time_base=self.time_base or 1 / self.rate,
            keyframes=self.keyframes,
            width=self.width,
            height=self.height,
            pix_fmt=self.pix_fmt,
        )

    def finish(self, *, keep_vfr: bool, constant: bool = False) -> Analysis:
        """The whole analysis once every frame was fed; `constant` keeps the rate the pass began with
        (chunks were planned with it while the pass ran) even when the timestamps turn out to vary."""
        if not self.frame_pts:
            raise MediaError("the video stream has no decodable frame", code="E_MEDIA_NO_FRAMES")
        frame_pts = self.frame_pts
        if any(p is None for p in frame_pts) or len(set(frame_pts)) != len(frame_pts):
            frame_pts = [None] * len(frame_pts)  # no usable timestamps: workers count frames instead
        starts = self.cuts.finish(self.frames - 1)
        timestamps, rate = self.timestamps, self.rate
        constant_analysis = Analysis(
            rate=rate,
            source_of=list(range(len(timestamps))),
            scene_starts=starts,
            vfr_converted=False,
            frame_pts=frame_pts,
            stream_time_base=self.time_base or 1 / rate,
            keyframes=tuple(self.keyframes),
            width=self.width,
            height=self.height,
            pix_fmt=self.pix_fmt,
        )
        if constant or not is_variable(timestamps):
            return constant_analysis
        # Containers often misreport a VFR stream's average (Matroska says the nominal rate): measure it.
        rate = average_rate(timestamps)
        time_base = self.time_base
        if keep_vfr and time_base:
            ticks = [(ts - timestamps[0]) / time_base for ts in timestamps]
            if all(t.denominator == 1 and t >= 0 for t in ticks) and ticks == sorted(set(ticks)):
                return replace(constant_analysis, rate=rate, pts=[int(t) for t in ticks], time_base=time_base)
        source_of = cfr_sources(timestamps, rate)
        first_cfr: dict[int, int] = {}
        for cfr_index, decoded in enumerate(source_of):
            first_cfr.setdefault(decoded, cfr_index)
        cfr_starts = sorted({first_cfr[s] for s in starts if s in first_cfr})
        return replace(
            constant_analysis, rate=rate, source_of=source_of, scene_starts=cfr_starts, vfr_converted=True
        )


class PacketRateCheck:
    """Whether chunks of a source (a local file or a presigned URL) can be planned while it is read: its video packets' timestamps
    are all there, distinct and evenly spaced (read from the container alone, nothing decoded).

    A variable rate is only known once every timestamp was seen (and changes every chunk's output
    slots), so such a source, or one without timestamps, is planned after the whole pass. The check
    reads every packet of the file, which takes seconds for a long upload: ffprobe does it beside the
    pass (started here, its list written to a scratch file so it never waits on a full pipe), and
    `constant_rate()` waits for it only when the first chunk is decided. A check that fails or overruns
    `timeout_s` answers False: the source is planned after its pass, as before streaming.
    """

    def __init__(self, source: Source, *, etag: str | None = None, timeout_s: float = 600.0) -> None:
        self.timeout_s = timeout_s
        with open_source(source, etag) as container:
            base = container.streams.video[0].time_base
        self._base = Fraction(base) if base else None
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the check
        self._process = subprocess.Popen(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts",
             "-of", "csv=p=0", *ffprobe_input(source, etag)],
            stdout=self._output, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._verdict: bool | None = None

    def constant_rate(self) -> bool:
        """Wait for the check (at most `timeout_s` from now) and say whether the source streams."""
        if self._verdict is None:
            self._verdict = self._wait()
        return self._verdict

    def _wait(self) -> bool:
        try:
            code = self._process.wait(self.timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            return False
        if code != 0 or self._base is None:
            return False
        self._output.seek(0)
        pts = [_pts(line) for line in self._output.read().decode("ascii", errors="replace").split()]
        return packets_at_constant_rate(pts, self._base)

    def close(self) -> None:
        """Stop the check if it still runs (the pass ended first) and drop its output."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._output.close()

    def __enter__(self) -> PacketRateCheck:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _pts(line: str) -> int | None:
    """One line of ffprobe's `packet=pts` CSV: the timestamp, or None ("N/A")."""
    value = line.strip(",")
    return int(value) if value.lstrip("-").isdigit() else None


def streams_at_constant_rate(source: Path) -> bool:
    """`PacketRateCheck` of `source`, waited for at once."""
    with PacketRateCheck(source) as check:
        return check.constant_rate()
