"""How a job's output video is encoded: decided once by the splitter, applied by every worker.

Every worker encodes its chunk with the same `VideoEncoding`, so the chunks concatenate by stream copy
into one valid stream: same encoder, rate control, preset, pixel format and colour signalling, each
chunk a closed GOP run that starts with a keyframe. The source's bit depth is kept where the encoder
can, its colour signalling (primaries, transfer, matrix, range) always, and for HEVC and SVT-AV1 its
HDR10 static metadata (mastering display and content light level); libx264 and libaom-av1 here cannot
write that metadata, so their output keeps the colour signalling only.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from infiniteflow_common.events import VideoEncoding
from infiniteflow_common.output import (
    DEFAULT_CRF,
    DEFAULT_PRESET,
    ENCODERS,
    OutputOptionError,
    OutputOptions,
    SizeUnsupportedError,
    check_for_encoder,
)
from infiniteflow_common.remote_media import ffprobe_input

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

    def as_rationals(self) -> tuple[str, ...]:
        """The ten values in `VideoEncoding.mastering_display` order, as exact 'n/d' strings."""
        values = [*self.green, *self.blue, *self.red, *self.white, self.max_luminance, self.min_luminance]
        return tuple(str(v) for v in values)

    @classmethod
    def from_rationals(cls, values: tuple[str, ...]) -> Mastering:
        """Read back `as_rationals`."""
        v = [Fraction(x) for x in values]
        return cls((v[0], v[1]), (v[2], v[3]), (v[4], v[5]), (v[6], v[7]), v[8], v[9])


@dataclass(frozen=True)
class HdrMetadata:
    """HDR10 static metadata: the mastering display and the content light levels, each when known."""

    mastering: Mastering | None = None
    max_cll: int | None = None
    max_fall: int | None = None


def encoder_pix_fmt(source: str, encoder: str = "libx264") -> str:
    """The source's pixel format when the encoder takes it, else the closest one it does by depth."""
    if source in ENCODER_FORMATS.get(encoder, X264_FORMATS):
        return source
    deep = any(tag in source for tag in ("10", "12", "16", "48", "64"))
    return "yuv420p10le" if deep else "yuv420p"


def chroma_steps(pix_fmt: str) -> tuple[int, int]:
    """(horizontal, vertical) chroma subsampling of a pixel format: 4:2:0 → (2, 2), 4:2:2 → (2, 1)."""
    if "420" in pix_fmt or pix_fmt.startswith(("nv12", "nv21", "p010", "p016")):
        return 2, 2
    if "422" in pix_fmt or pix_fmt.startswith(("nv16", "nv20", "yuyv", "uyvy")):
        return 2, 1
    if "411" in pix_fmt:
        return 4, 1
    if "410" in pix_fmt:
        return 4, 4
    return 1, 1


def size_problem(encoder: str, pix_fmt: str, width: int, height: int) -> str | None:
    """Why `encoder` cannot make a `width`×`height` stream of the source's `pix_fmt`; None when it can.

    H.264 and HEVC code whole chroma samples and crop in chroma units (SPS frame cropping, the
    conformance window: 2 pixels in 4:2:0), so a 4:2:0 picture of odd width or height cannot be
    coded, nor padded and cropped back to its size; FFmpeg 5.1 writes no container crop either
    (Matroska PixelCrop, MP4 `clap`). AV1 codes any frame size: libaom-av1 does, SVT-AV1 wants even.
    """
    if encoder == "libaom-av1":
        return None
    layout = encoder_pix_fmt(pix_fmt, encoder)
    across, down = (2, 2) if encoder == "libsvtav1" else chroma_steps(layout)
    if width % across == 0 and height % down == 0:
        return None
    sides = [n for n, odd in (("width", width % across), ("height", height % down)) if odd]
    return f"{encoder} codes {layout} only at an even {' and '.join(sides)}"


def for_size(
    options: OutputOptions, width: int, height: int, pix_fmt: str, available: frozenset[str]
) -> OutputOptions:
    """`options` with an encoder that makes the source's exact frame size, or `SizeUnsupportedError`.

    For AV1 the next encoder that can is taken (libaom-av1 for odd sizes); H.264 and HEVC at an odd
    size in subsampled chroma are refused at ingest, before any work, naming the size and the ways out.
    """
    encoder = options.encoder
    if encoder is None or (problem := size_problem(encoder, pix_fmt, width, height)) is None:
        return options
    size = f"{width}×{height}"
    for other in ENCODERS.get(options.codec, ()):
        if other != encoder and other in available and size_problem(other, pix_fmt, width, height) is None:
            try:
                return check_for_encoder(options, other)
            except OutputOptionError as exc:
                raise SizeUnsupportedError(
                    f"the video is {size} and {problem}; {other} keeps the size, but {exc.message}"
                ) from exc
    fix = (
        "choose codec=av1 (libaom-av1 keeps any size) or upload an even size"
        if options.codec != "av1"
        else "upload an even size (or make libaom-av1 available)"
    )
    raise SizeUnsupportedError(
        f"the video is {size}: {options.codec} output cannot keep that size ({problem}); {fix}"
    )


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


def probe_hdr(source: Path | str, timeout_s: float = 60.0, *, etag: str | None = None) -> HdrMetadata | None:
    """The source's HDR10 metadata: its video stream's side data, else its first frame's (SEI).

    `source` is a local file or a presigned URL of the probed object (`etag` pins its version).
    """
    opened = ffprobe_input(source, etag)
    streams = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", *opened],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if streams.returncode == 0:
        video = (json.loads(streams.stdout).get("streams") or [{}])[0]
        found = hdr_of(video.get("side_data_list", []))
        if found is not None:
            return found
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1", "-show_frames",
         "-show_entries", "frame=side_data_list", "-of", "json", *opened],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return None
    frames = json.loads(result.stdout).get("frames") or [{}]
    return hdr_of(frames[0].get("side_data_list", []))


def encoding_for(
    options: OutputOptions,
    probe: Mapping[str, Any],
    hdr: HdrMetadata | None,
    *,
    x264_crf: int,
    x264_preset: str,
) -> VideoEncoding:
    """The job's encoding: the user's options over our defaults, the source's format and colour."""
    encoder = options.encoder or "libx264"
    x264 = encoder == "libx264"
    return VideoEncoding(
        encoder=encoder,
        pix_fmt=str(probe.get("pix_fmt") or "yuv420p"),
        crf=(options.crf if options.crf is not None or not x264 else x264_crf)
        if options.bitrate is None
        else None,
        bitrate=options.bitrate,
        preset=options.preset or (x264_preset if x264 else None),
        color_range=probe.get("color_range"),
        color_space=probe.get("color_space"),
        color_transfer=probe.get("color_transfer"),
        color_primaries=probe.get("color_primaries"),
        mastering_display=hdr.mastering.as_rationals() if hdr and hdr.mastering else None,
        max_cll=hdr.max_cll if hdr else None,
        max_fall=hdr.max_fall if hdr else None,
    )


def hdr_of_encoding(encoding: VideoEncoding) -> HdrMetadata | None:
    """The HDR10 metadata an encoding carries, or None."""
    mastering = Mastering.from_rationals(encoding.mastering_display) if encoding.mastering_display else None
    if mastering is None and encoding.max_cll is None:
        return None
    return HdrMetadata(mastering, encoding.max_cll, encoding.max_fall)


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


SVTAV1_MAX_FPS = 240
"""The highest frame rate SVT-AV1 (1.4) accepts; above it the encoder is told a whole fraction of the
real rate (`encoder_args`), which its rate control only uses to share a bitrate between frames."""


def svtav1_rate_scale(rate: Fraction | None) -> int:
    """By how much SVT-AV1 must be told a lower rate than `rate` (1: none): the least whole divisor."""
    if rate is None or rate <= SVTAV1_MAX_FPS:
        return 1
    return -(-rate // SVTAV1_MAX_FPS)  # ceiling


def encoder_args(encoding: VideoEncoding, rate: Fraction | None = None) -> list[str]:
    """`-c:v` with its rate control, preset, pixel format, closed GOP, HDR metadata and colour tags.

    Chunks are concatenated by stream copy, so each must decode on its own: it starts with an IDR /
    key frame and no picture references one outside it (closed GOP, no open-GOP CRA/RASL in x265).
    `rate` is the output frame rate: above 240 fps SVT-AV1 is told rate / n (n whole) and a bitrate
    target / n, so it spends per frame what the real rate allows; the timestamps stay exact.
    """
    encoder = encoding.encoder
    scale = svtav1_rate_scale(rate) if encoder == "libsvtav1" else 1
    args = ["-c:v", encoder]
    if encoder == "libaom-av1":
        args += ["-cpu-used", encoding.preset or DEFAULT_PRESET[encoder], "-row-mt", "1"]
    elif encoding.preset is not None or encoder in DEFAULT_PRESET:
        args += ["-preset", encoding.preset or DEFAULT_PRESET[encoder]]
    if encoding.bitrate is not None:
        args += ["-b:v", str(max(1, encoding.bitrate // scale))]
    else:
        crf = encoding.crf if encoding.crf is not None else DEFAULT_CRF.get(encoder, 23)
        args += ["-crf", str(crf)]
        if encoder == "libaom-av1":
            args += ["-b:v", "0"]  # constant quality: CRF alone, no bitrate cap
    args += ["-pix_fmt", encoder_pix_fmt(encoding.pix_fmt, encoder)]
    hdr = hdr_of_encoding(encoding)
    if encoder == "libx264":
        args += ["-flags", "+cgop"]
    elif encoder == "libx265":
        # x265 writes its own VUI from these, and the SEI from master-display / max-cll
        params = ["log-level=error", "open-gop=0"] + ([] if hdr is None else _x265_hdr(hdr))
        args += ["-x265-params", ":".join(params)]
    elif encoder == "libsvtav1":
        svt = [] if hdr is None else _svtav1_hdr(hdr)
        if scale > 1 and rate is not None:
            told = rate / scale
            svt += [f"fps-num={told.numerator}", f"fps-denom={told.denominator}"]
        if svt:
            args += ["-svtav1-params", ":".join(svt)]
    for flag, value in (
        ("-color_range", encoding.color_range),
        ("-colorspace", encoding.color_space),
        ("-color_trc", encoding.color_transfer),
        ("-color_primaries", encoding.color_primaries),
    ):
        if value and value != "unknown":
            args += [flag, value]
    return args
