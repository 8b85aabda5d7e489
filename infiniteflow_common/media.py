"""Frame-exact media helpers over PyAV: decoding, RGB conversion, rational rates, `MediaError`.

The pipeline keeps no intermediate files: workers read their chunk's frames from the pinned source
and encode the job's final codec directly (services/gpu_interp/handlers.py), and the muxer joins the
encoded chunks by stream copy. `LosslessWriter` (FFV1 in Matroska) is left for tests and tools that
need a lossless file. Files are opened with the `file` protocol only, so a crafted file cannot make
the demuxer read URLs or other local files.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from infiniteflow_common.errors import InfiniteFlowError

SAFE_OPTIONS = {"protocol_whitelist": "file"}


class MediaError(InfiniteFlowError):
    """A media file could not be read or written."""

    code = "E_MEDIA"
    media_failure = True  # counted in infiniteflow_ffmpeg_failures_total


def open_input(path: Path) -> Any:
    """Open a local media file for reading, restricted to the file protocol."""
    try:
        return av.open(str(path), "r", options=dict(SAFE_OPTIONS))
    except av.FFmpegError as exc:
        raise MediaError(f"cannot open {path.name}: {exc}", code="E_MEDIA_UNREADABLE") from exc


def decode_video(path: Path) -> Iterator[Any]:
    """Every frame of the first video stream, in presentation order (no auto-rotation)."""
    with open_input(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            yield from container.decode(stream)
        except av.FFmpegError as exc:
            raise MediaError(f"decoding {path.name} failed: {exc}", code="E_MEDIA_CORRUPT") from exc


def rgb_format(pix_fmt: str) -> str:
    """The RGB layout an engine gets for `pix_fmt`: 16-bit for deep sources, else 8-bit."""
    descriptor = av.VideoFormat(pix_fmt)
    depth = max(component.bits for component in descriptor.components)
    return "rgb48le" if depth > 8 else "rgb24"


def to_rgb(frame: Any, layout: str) -> npt.NDArray[Any]:
    """A decoded frame as an (H, W, 3) uint8/uint16 RGB array."""
    return np.asarray(frame.to_ndarray(format=layout))


class LosslessWriter:
    """Writes frames to an FFV1/Matroska file at a fixed rational rate with the source's pixel format.

    With `time_base`, frames carry the timestamps given to `write` (in that time base) instead, in a
    NUT file, whose time base is exact (Matroska would round them to the millisecond).
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        pix_fmt: str,
        rate: Fraction,
        time_base: Fraction | None = None,
    ) -> None:
        self.path = path
        self.pix_fmt = pix_fmt
        self.rate = rate
        self.count = 0
        self._container: Any = av.open(str(path), "w", format="nut" if time_base else "matroska")
        stream = self._container.add_stream("ffv1", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        # The codec's time base, not the stream's: Matroska rescales packets from it to its own 1 ms.
        stream.codec_context.time_base = time_base or 1 / rate
        if time_base:
            stream.time_base = time_base
        self._time_base = time_base or 1 / rate
        stream.options = {"level": "3", "g": "1", "slicecrc": "1"}
        stream.thread_type = "AUTO"
        self._stream = stream

    def write(self, frame: Any, pts: int | None = None) -> None:
        """Append a decoded `av.VideoFrame` (converted to the writer's pixel format if needed).

        `pts` (in the writer's time base) is the frame's timestamp; by default frame n is at n / rate.
        """
        if frame.format.name != self.pix_fmt:
            frame = frame.reformat(format=self.pix_fmt)
        frame.pts = self.count if pts is None else pts
        frame.time_base = self._time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.count += 1

    def write_rgb(self, rgb: npt.NDArray[Any]) -> None:
        """Append an (H, W, 3) RGB array (uint8 → rgb24, uint16 → rgb48le)."""
        layout = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
        self.write(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=layout))

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> LosslessWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._container.close()


def rational(num: int, den: int) -> Fraction:
    """A frame rate as an exact fraction."""
    if num <= 0 or den <= 0:
        raise MediaError(f"frame rate {num}/{den} is not valid", code="E_MEDIA_BAD_FRAME_RATE")
    return Fraction(num, den)


def fraction_text(value: Fraction) -> str:
    """`num/den`, the way ffmpeg and our API spell rates."""
    return f"{value.numerator}/{value.denominator}"
