"""Frame-exact media helpers over PyAV: decoding, RGB conversion, rational rates, `MediaError`.

The pipeline keeps no intermediate files: workers read their chunk's frames from the pinned source
and encode the job's final codec directly (services/gpu_interp/handlers.py), and the muxer joins the
encoded chunks by stream copy. Files are opened with the `file` protocol only, so a crafted file cannot make
the demuxer read URLs or other local files.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
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


def rational(num: int, den: int) -> Fraction:
    """A frame rate as an exact fraction."""
    if num <= 0 or den <= 0:
        raise MediaError(f"frame rate {num}/{den} is not valid", code="E_MEDIA_BAD_FRAME_RATE")
    return Fraction(num, den)


def fraction_text(value: Fraction) -> str:
    """`num/den`, the way ffmpeg and our API spell rates."""
    return f"{value.numerator}/{value.denominator}"
