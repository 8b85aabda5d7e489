"""Output video options: codec, rate control, preset, duplicate skipping (pure; ingest, splitter, muxer).

The user names a codec (`h264`, `h265`, `av1`, or `source` for the input's own codec); the encoder
is chosen among those this FFmpeg lists (`ffmpeg -encoders`), so a job never asks for one the muxer
cannot run. Rate control is a CRF or a bitrate (not both); without either the encoder's default
CRF applies. Presets are each encoder's own vocabulary. Ingest validates and stores the options on
the job row; the muxer reads them back from there.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from infiniteflow_common.errors import InfiniteFlowError

ENCODERS: dict[str, tuple[str, ...]] = {
    "h264": ("libx264",),
    "h265": ("libx265",),
    "av1": ("libsvtav1", "libaom-av1"),
}
"""Our codec names → encoders that make them, in order of preference."""
CODEC_ALIASES = {
    "h264": "h264", "avc": "h264", "x264": "h264",
    "h265": "h265", "hevc": "h265", "x265": "h265",
    "av1": "av1",
    "source": "source", "same": "source", "same-as-input": "source", "input": "source",
}  # fmt: skip
SOURCE_CODECS = {"h264": "h264", "hevc": "h265", "av1": "av1"}
"""ffprobe's codec_name of a source → our codec name, for `source`."""
X26X_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
    "placebo",
)  # fmt: skip
CRF_RANGE = {"libx264": (0, 51), "libx265": (0, 51), "libsvtav1": (1, 63), "libaom-av1": (0, 63)}
PRESET_RANGE = {"libsvtav1": (0, 13), "libaom-av1": (0, 8)}
"""Numeric presets: SVT-AV1's `-preset`, libaom's `-cpu-used` (higher is faster)."""
DEFAULT_CRF = {"libx265": 22, "libsvtav1": 32, "libaom-av1": 30}
DEFAULT_PRESET = {"libx265": "medium", "libsvtav1": "8", "libaom-av1": "6"}
_BITRATE = re.compile(r"^([1-9][0-9]*(?:\.[0-9]+)?)([kKmM]?)$")
MAX_BITRATE = 1_000_000_000


class OutputOptionError(InfiniteFlowError):
    """An output option cannot be honoured (permanent: the job is refused at ingest)."""

    code = "E_PARAM_INVALID"


class CodecUnsupportedError(OutputOptionError):
    """The codec asked for (or the source's, for `source`) has no encoder in this FFmpeg."""

    code = "E_OUTPUT_CODEC_UNSUPPORTED"


class SizeUnsupportedError(OutputOptionError):
    """The output codec cannot be encoded at the source's exact frame size (refused at ingest)."""

    code = "E_OUTPUT_SIZE_UNSUPPORTED"


class RateUnsupportedError(OutputOptionError):
    """The output frame rate is one the chunks or the output container cannot time (refused at ingest)."""

    code = "E_OUTPUT_RATE_UNSUPPORTED"


class OutputOptions(BaseModel):
    """What the user asked of the output video; `encoder` is set once the codec is known."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    codec: str = "h264"
    encoder: str | None = None
    crf: int | None = Field(default=None, ge=0)
    bitrate: int | None = Field(default=None, gt=0, le=MAX_BITRATE)
    preset: str | None = None
    # Skip duplicated source frames and interpolate across the real motion (timing unchanged).
    dedupe: bool = False
    # Decided at ingest from the source's streams (`infiniteflow_common.streams`), never by the user:
    # the container that carries every audio and subtitle track bit-exact, why, and what it drops.
    container: Literal["mp4", "mov", "mkv"] = "mp4"
    container_reason: str | None = None
    container_losses: tuple[str, ...] = ()


@functools.cache
def available_encoders() -> frozenset[str]:
    """The video encoders `ffmpeg -encoders` lists on this machine (asked once per process)."""
    try:
        result = subprocess.run(
            ["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    names = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("V") and len(parts[0]) == 6:
            names.add(parts[1])
    return frozenset(names)


def parse_bitrate(text: str) -> int:
    """`8M`, `2500k`, `1.5M` or plain bits per second → bits per second."""
    match = _BITRATE.match(text.strip())
    if match is None:
        raise OutputOptionError(
            f"bitrate={text[:40]!r} is not a bitrate: use bits per second with an optional k or M "
            "suffix (e.g. 8M or 2500k)"
        )
    value = float(match[1]) * {"": 1, "k": 1_000, "m": 1_000_000}[match[2].lower()]
    if not 0 < value <= MAX_BITRATE:
        raise OutputOptionError(f"bitrate={text[:40]!r} must be above 0 and at most 1000M")
    return int(value)


def parse_switch(text: str, key: str) -> bool:
    """`true`/`yes`/`on`/`1` or `false`/`no`/`off`/`0`."""
    value = text.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise OutputOptionError(f"{key}={text[:40]!r} is not a switch: use true or false")


def choose_encoder(codec: str, available: frozenset[str]) -> str:
    """The preferred encoder of `codec` that `available` lists; refused with the ones there are."""
    for encoder in ENCODERS[codec]:
        if encoder in available:
            return encoder
    offered = sorted(c for c, encoders in ENCODERS.items() if any(e in available for e in encoders))
    raise CodecUnsupportedError(
        f"codec {codec} cannot be encoded here (no {' or '.join(ENCODERS[codec])} in this FFmpeg); "
        f"choose one of {', '.join([*offered, 'source'])}"
    )


def parse_output(options: Mapping[str, str], available: frozenset[str]) -> OutputOptions:
    """Output options from normalised user options (`codec`, `crf`, `bitrate`, `preset`, `dedupe`).

    `source` stays unresolved (its encoder is chosen once the input is probed, `for_source`); for
    a named codec the encoder is chosen now and the CRF and preset are checked against it.
    """
    raw = options.get("codec", "h264").lower()
    codec = CODEC_ALIASES.get(raw)
    if codec is None:
        raise CodecUnsupportedError(
            f"codec={raw[:40]!r} is not offered: use h264, h265, av1 or source (the input's codec)"
        )
    crf: int | None = None
    if "crf" in options:
        if not options["crf"].isdigit():
            raise OutputOptionError(f"crf={options['crf'][:40]!r} is not a whole number (e.g. 18)")
        crf = int(options["crf"])
    bitrate = parse_bitrate(options["bitrate"]) if "bitrate" in options else None
    if crf is not None and bitrate is not None:
        raise OutputOptionError("set either crf or bitrate, not both")
    preset = options.get("preset", "").lower() or None
    dedupe = parse_switch(options["dedupe"], "dedupe") if "dedupe" in options else False
    chosen = OutputOptions(codec=codec, crf=crf, bitrate=bitrate, preset=preset, dedupe=dedupe)
    if codec == "source":
        return chosen
    return check_for_encoder(chosen, choose_encoder(codec, available))


def for_source(options: OutputOptions, source_codec: str, available: frozenset[str]) -> OutputOptions:
    """Resolve `source` to the input's codec (after the probe); other options pass unchanged."""
    if options.codec != "source":
        return options
    codec = SOURCE_CODECS.get(source_codec)
    if codec is None:
        raise CodecUnsupportedError(
            f"codec=source asks for the input's codec {source_codec}, which the output cannot use; "
            "choose h264, h265 or av1"
        )
    resolved = options.model_copy(update={"codec": codec})
    return check_for_encoder(resolved, choose_encoder(codec, available))


def check_for_encoder(options: OutputOptions, encoder: str) -> OutputOptions:
    """`options` with `encoder` set, once its CRF and preset are valid for that encoder."""
    low, high = CRF_RANGE[encoder]
    if options.crf is not None and not low <= options.crf <= high:
        raise OutputOptionError(f"crf={options.crf} is outside {low}–{high} for {options.codec} ({encoder})")
    if options.preset is not None:
        if encoder in PRESET_RANGE:
            first, last = PRESET_RANGE[encoder]
            if not options.preset.isdigit() or not first <= int(options.preset) <= last:
                raise OutputOptionError(
                    f"preset={options.preset[:40]!r} is not a {encoder} preset: use {first}–{last} "
                    "(higher is faster)"
                )
        elif options.preset not in X26X_PRESETS:
            raise OutputOptionError(
                f"preset={options.preset[:40]!r} is not a {encoder} preset: use one of {', '.join(X26X_PRESETS)}"
            )
    return options.model_copy(update={"encoder": encoder})
