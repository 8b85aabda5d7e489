"""Decode → interpolate → encode on one machine, the three stages overlapping.

Decoding and encoding run in their own threads (PyAV/FFmpeg release the GIL), inference in the
caller's thread; bounded queues between them keep memory flat and let the slowest stage set the
pace. Across a scene cut nothing is interpolated: the slots repeat the last frame of the scene.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import numpy as np

from infiniteflow_common.errors import InfiniteFlowError
from infiniteflow_common.timing import output_count, times_after
from services.gpu_interp.engines.base import FrameArray, InterpolationEngine

T = TypeVar("T")
_DONE = object()


class _Stage(Generic[T]):
    """A thread pushing an iterable into a bounded queue; errors surface in the consumer."""

    def __init__(self, items: Iterable[T], maxsize: int) -> None:
        self.queue: queue.Queue[object] = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(items,), daemon=True)
        self.thread.start()

    def _run(self, items: Iterable[T]) -> None:
        try:
            for item in items:
                while not self.stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer thread, which re-raises it
            self.error = exc
        finally:
            while True:  # the end marker, unless the consumer already left
                try:
                    self.queue.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    if self.stop.is_set():
                        break

    def __iter__(self) -> Iterator[T]:
        try:
            while (item := self.queue.get()) is not _DONE:
                yield item  # type: ignore[misc]
        finally:
            self.stop.set()
        if self.error is not None:
            raise self.error


def run_stages(
    produce: Iterable[T],
    transform: Callable[[Iterable[T]], Iterable[Any]],
    consume: Callable[[Any], None],
    maxsize: int = 8,
) -> None:
    """`consume(transform(produce))` with `produce` and `consume` in their own threads."""
    outputs: queue.Queue[object] = queue.Queue(maxsize)
    consumer_error: list[BaseException] = []

    def sink() -> None:
        try:
            while (item := outputs.get()) is not _DONE:
                consume(item)
        except BaseException as exc:  # re-raised in the caller's thread below
            consumer_error.append(exc)
            while outputs.get() is not _DONE:  # keep draining so the producer never blocks
                pass

    sink_thread = threading.Thread(target=sink, daemon=True)
    sink_thread.start()
    try:
        for item in transform(_Stage(produce, maxsize)):
            if consumer_error:
                break
            outputs.put(item)
    finally:
        outputs.put(_DONE)
        sink_thread.join()
    if consumer_error:
        raise consumer_error[0]


@dataclass(frozen=True)
class VideoInfo:
    """What the command needs to know about its input."""

    rate: Fraction
    width: int
    height: int
    frames: int  # 0 when the container does not say
    pix_fmt: str
    high_depth: bool


def probe(path: Path) -> VideoInfo:
    """Frame rate (exact), size and pixel format of the first video stream."""
    import av

    try:
        with av.open(str(path)) as container:
            stream: Any = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise InfiniteFlowError(f"{path}: no frame rate in the video stream", code="E_PROBE_NO_RATE")
            fmt = stream.codec_context.pix_fmt or "yuv420p"
            return VideoInfo(
                Fraction(rate),
                stream.width,
                stream.height,
                stream.frames or 0,
                fmt,
                any(x in fmt for x in ("10", "12", "16")),
            )
    except (av.error.FFmpegError, IndexError) as exc:
        raise InfiniteFlowError(f"{path} is not a readable video: {exc}", code="E_PROBE_UNREADABLE") from exc


def decode(path: Path, high_depth: bool) -> Iterator[FrameArray]:
    """RGB frames, 8 or 16 bits per channel, in display order."""
    import av

    fmt = "rgb48le" if high_depth else "rgb24"
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format=fmt)


def scene_cuts(path: Path, threshold: float = 27.0) -> set[int]:
    """Indices of frames that start a new scene (PySceneDetect's content detector)."""
    from scenedetect import ContentDetector, detect

    scenes = detect(str(path), ContentDetector(threshold=threshold), show_progress=False)
    return {start.get_frames() for start, _ in scenes[1:]}


def interpolated_frames(
    frames: Iterable[FrameArray],
    engine: InterpolationEngine,
    in_rate: Fraction,
    out_rate: Fraction,
    cuts: set[int] | frozenset[int] = frozenset(),
    batch_size: int = 4,
) -> Iterator[FrameArray]:
    """The output frames in display order; pairs across a scene cut repeat their first frame."""
    pending: list[tuple[FrameArray, FrameArray, list[Fraction], bool]] = []

    def flush() -> Iterator[FrameArray]:
        groups: dict[tuple[Fraction, ...], list[int]] = {}
        for n, (_, _, times, cut) in enumerate(pending):
            if not cut:
                groups.setdefault(tuple(t for t in times if t != 0), []).append(n)
        made: dict[tuple[int, Fraction], FrameArray] = {}
        for wanted, members in groups.items():
            if not wanted:
                continue
            firsts = np.stack([pending[n][0] for n in members])
            seconds = np.stack([pending[n][1] for n in members])
            for t, batch in zip(wanted, engine.interpolate_times(firsts, seconds, list(wanted)), strict=True):
                assert isinstance(batch, np.ndarray)
                for row, n in enumerate(members):
                    made[(n, t)] = batch[row]
        for n, (first, _, times, cut) in enumerate(pending):
            for t in times:
                yield first if t == 0 or cut else made[(n, t)]
        pending.clear()

    previous: FrameArray | None = None
    index = -1
    for index, frame in enumerate(frames):
        if previous is not None:
            pending.append((previous, frame, times_after(index - 1, in_rate, out_rate), index in cuts))
            if len(pending) >= batch_size:
                yield from flush()
        previous = frame
    yield from flush()
    if previous is not None:  # the last frame holds until the input's duration is covered
        total = output_count(index + 1, in_rate, out_rate)
        already = output_count(index, in_rate, out_rate) if index > 0 else 0
        for _ in range(total - already):
            yield previous


class Encoder:
    """Writes RGB frames to a video file at an exact rational rate (libx264 CRF 16, or FFV1 lossless)."""

    def __init__(self, path: Path, rate: Fraction, info: VideoInfo, lossless: bool = False) -> None:
        import av

        self.container = av.open(str(path), mode="w")
        codec = "ffv1" if lossless else "libx264"
        self.stream: Any = cast(Any, self.container.add_stream(codec, rate=rate))
        self.stream.width, self.stream.height = info.width, info.height
        self.stream.time_base = 1 / rate
        x264_formats = {"yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le"}
        if lossless:
            self.stream.pix_fmt = info.pix_fmt if info.pix_fmt.startswith(("yuv", "gbr")) else "yuv444p"
        else:
            self.stream.pix_fmt = info.pix_fmt if info.pix_fmt in x264_formats else "yuv420p"
            self.stream.options = {"crf": "16", "preset": "medium"}
        self.high_depth = info.high_depth
        self.count = 0

    def write(self, frame: FrameArray) -> None:
        import av

        video_frame = av.VideoFrame.from_ndarray(
            frame, format="rgb48le" if frame.dtype == np.uint16 else "rgb24"
        )
        video_frame.pts = self.count
        self.count += 1
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def mux_with_source_streams(video: Path, source: Path, out: Path) -> None:
    """Copy the new video and the source's audio (and subtitles into Matroska) bit-exact into `out`."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InfiniteFlowError("ffmpeg is needed to mux the audio back; install it", code="E_FFMPEG_MISSING")
    maps = ["-map", "0:v:0", "-map", "1:a?"]
    if out.suffix.lower() in (".mkv", ".webm"):
        maps += ["-map", "1:s?"]
    cmd = [ffmpeg, "-v", "error", "-y", "-i", str(video), "-i", str(source), *maps, "-c", "copy", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InfiniteFlowError(f"muxing into {out} failed: {done.stderr.strip()}", code="E_MUX_FAILED")


def interpolate_video(
    source: Path,
    out: Path,
    engine: InterpolationEngine,
    out_rate: Fraction | None = None,
    multiplier: int | None = None,
    lossless: bool = False,
    detect_cuts: bool = True,
    batch_size: int = 4,
    on_frame: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> tuple[VideoInfo, Fraction, int]:
    """The whole media path; returns the input's info, the output rate and the frames written."""
    info = probe(source)
    rate = info.rate * multiplier if multiplier is not None else out_rate
    if rate is None:
        raise InfiniteFlowError("give a multiplier or an output rate", code="E_BAD_FRAME_RATE")
    cuts = scene_cuts(source) if detect_cuts else set()
    if on_start is not None and info.frames:
        on_start(output_count(info.frames, info.rate, rate))
    with tempfile.TemporaryDirectory(prefix="infiniteflow-") as tmp:
        video_only = Path(tmp) / "video.mkv"
        encoder = Encoder(video_only, rate, info, lossless)

        def write(frame: FrameArray) -> None:
            encoder.write(frame)
            if on_frame is not None:
                on_frame(encoder.count)

        try:
            run_stages(
                decode(source, info.high_depth),
                lambda frames: interpolated_frames(frames, engine, info.rate, rate, cuts, batch_size),
                write,
            )
        finally:
            encoder.close()
        mux_with_source_streams(video_only, source, out)
    return info, rate, encoder.count


def frames_of(path_list: Sequence[Path]) -> list[FrameArray]:
    """Read images as RGB arrays at their own depth (for the `frames` command)."""
    import cv2

    out = []
    for path in path_list:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise InfiniteFlowError(f"{path} is not a readable image", code="E_IMAGE_UNREADABLE")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        else:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        out.append(image)
    return out
