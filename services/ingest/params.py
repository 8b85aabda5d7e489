"""User options → `JobParams` (pure).

Options arrive as object user metadata (`multiplier`, `target-fps`, `engine`, `quality`, `model`, `webhook-url`,
`priority`, and for the output video `codec`, `crf`, `bitrate`, `preset`, `dedupe`; already lower-cased by
the event parser) or as API form fields (`target_fps`, `webhook_url`). Absent
options take the configured defaults; a bad value raises `InvalidParams` naming the key and what is
allowed, so the user can fix the upload. Unknown metadata keys are ignored: other tools set their own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from urllib.parse import urlsplit

from infiniteflow_common.destinations import DestinationRefused, check_host, check_literal
from infiniteflow_common.encoding import for_size
from infiniteflow_common.errors import InfiniteFlowError
from infiniteflow_common.events import PRIORITY_MAX, PRIORITY_MIN, JobParams, MediaProbe
from infiniteflow_common.output import (
    OutputOptionError,
    OutputOptions,
    RateUnsupportedError,
    for_source,
    parse_output,
)

MULTIPLIERS = (2, 4, 8)
MAX_URL_LENGTH = 2048
_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_RATIONAL = re.compile(r"^([0-9]+)/([0-9]+)$")
_INTEGER = re.compile(r"^[+-]?[0-9]{1,6}$")


class InvalidParams(InfiniteFlowError):  # noqa: N818 - the name the other services know
    """An option the user set cannot be honoured (permanent: the job fails, the message is done)."""

    code = "E_PARAM_INVALID"


@dataclass(frozen=True)
class ParamDefaults:
    """What an absent option means, and which values are allowed."""

    multiplier: int = 2
    engine: str = "rife"
    quality: str = "fast"
    engines: tuple[str, ...] = ("rife", "flow")
    qualities: tuple[str, ...] = ("fast", "tta", "best")
    model: str = "auto"
    models: tuple[str, ...] = ("auto", "hdv3", "v4.25")
    max_fps: float = 480.0
    # Video encoders this FFmpeg lists (the output codecs offered follow from them).
    encoders: frozenset[str] = frozenset()
    # Loopback destinations webhooks may name (local development; `WEBHOOK_ALLOWED_DESTINATIONS`).
    webhook_allowed: tuple[str, ...] = ()


def normalise_keys(options: Mapping[str, str | None]) -> dict[str, str]:
    """Lower-case names with `_` → `-`, values stripped; empty values count as absent."""
    out: dict[str, str] = {}
    for name, value in options.items():
        if value is None or not str(value).strip():
            continue
        out[name.strip().lower().replace("_", "-")] = str(value).strip()
    return out


def parse_fps(text: str, *, key: str = "target-fps", max_fps: float = 480.0) -> Fraction:
    """`60`, `59.94` (exactly 2997/50) or `60000/1001` → a positive Fraction no higher than `max_fps`."""
    value: Fraction | None = None
    if _DECIMAL.match(text):
        value = Fraction(text)
    elif match := _RATIONAL.match(text):
        numerator, denominator = int(match[1]), int(match[2])
        if denominator != 0:
            value = Fraction(numerator, denominator)
    if value is None or value <= 0 or value > max_fps:
        raise InvalidParams(
            f"{key}={text[:40]!r} is not a frame rate: use an integer, a decimal or a rational "
            f"num/den greater than 0 and at most {max_fps:g} (e.g. 60 or 60000/1001)"
        )
    return value


def parse_priority(text: str) -> int:
    """`-50` … `50` (a sign is allowed) → the job's priority; higher goes first among the tenant's jobs."""
    if not _INTEGER.match(text) or not PRIORITY_MIN <= int(text) <= PRIORITY_MAX:
        raise InvalidParams(
            f"priority={text[:40]!r} is not allowed: use an integer from {PRIORITY_MIN} to {PRIORITY_MAX} "
            "(higher goes first among your own jobs; 0 is normal)"
        )
    return int(text)


def format_fps(value: Fraction) -> str:
    """The wire form of an exact rate: '60' or '60000/1001'."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def parse_params(options: Mapping[str, str | None], defaults: ParamDefaults) -> JobParams:
    """Build the job's parameters from user options; raises `InvalidParams` on any bad value."""
    opts = normalise_keys(options)
    multiplier: int | None = None
    target_fps: str | None = None
    if "multiplier" in opts and "target-fps" in opts:
        raise InvalidParams("set either multiplier or target-fps, not both")
    if "multiplier" in opts:
        raw = opts["multiplier"].lower().removeprefix("x")
        if not raw.isdigit() or int(raw) not in MULTIPLIERS:
            raise InvalidParams(
                f"multiplier={opts['multiplier'][:40]!r} is not allowed: use one of "
                + ", ".join(map(str, MULTIPLIERS))
            )
        multiplier = int(raw)
    elif "target-fps" in opts:
        target_fps = format_fps(parse_fps(opts["target-fps"], max_fps=defaults.max_fps))
    else:
        multiplier = defaults.multiplier
    engine = opts.get("engine", defaults.engine).lower()
    if engine not in defaults.engines:
        raise InvalidParams(
            f"engine={engine[:40]!r} is not allowed: use one of {', '.join(defaults.engines)}"
        )
    quality = opts.get("quality", defaults.quality).lower()
    if quality not in defaults.qualities:
        raise InvalidParams(
            f"quality={quality[:40]!r} is not allowed: use one of {', '.join(defaults.qualities)}"
        )
    model = opts.get("model", defaults.model).lower()
    if model not in defaults.models:
        raise InvalidParams(f"model={model[:40]!r} is not allowed: use one of {', '.join(defaults.models)}")
    webhook_url = opts.get("webhook-url")
    if webhook_url is not None:
        check_webhook_url(webhook_url, defaults.webhook_allowed)
    priority = parse_priority(opts["priority"]) if "priority" in opts else 0
    return JobParams(
        multiplier=multiplier,  # checked against MULTIPLIERS above
        target_fps=target_fps,
        engine=engine,
        quality=quality,
        webhook_url=webhook_url,
        model=model,
        priority=priority,
    )


@dataclass(frozen=True)
class UserOptions:
    """One upload's options, parsed once at the edge (API form fields or object user metadata) into the
    models that travel with the job: `JobParams` and `OutputOptions`. Nothing downstream re-parses them.

    A bad option does not raise here: a bucket upload still gets its job row (with what was asked), and
    the start fails it with `error`, the first problem in the order params, then output options.
    """

    requested: Mapping[str, str]
    params: JobParams | None
    output: OutputOptions | None
    error: InvalidParams | None = None


def parse_options(options: Mapping[str, str | None], defaults: ParamDefaults) -> UserOptions:
    """`parse_params` and `parse_output_options` of the same options; each is None when it failed."""
    params: JobParams | None = None
    output: OutputOptions | None = None
    errors: list[InvalidParams] = []
    try:
        params = parse_params(options, defaults)
    except InvalidParams as exc:
        errors.append(exc)
    try:
        output = parse_output_options(options, defaults)
    except InvalidParams as exc:
        errors.append(exc)
    requested = {name: value for name, value in options.items() if value is not None}
    return UserOptions(requested, params, output, errors[0] if errors else None)


def params_metadata(params: JobParams) -> dict[str, str]:
    """The effective params as object user metadata, so the bucket event derives the same params."""
    options = {
        "multiplier": str(params.multiplier) if params.multiplier is not None else None,
        "target-fps": params.target_fps,
        "engine": params.engine,
        "quality": params.quality,
        "model": params.model,
        "webhook-url": params.webhook_url,
        "priority": str(params.priority),
    }
    return normalise_keys(options)


def parse_output_options(options: Mapping[str, str | None], defaults: ParamDefaults) -> OutputOptions:
    """The output video options (`codec`, `crf`, `bitrate`, `preset`, `dedupe`); `InvalidParams` when bad."""
    try:
        return parse_output(normalise_keys(options), defaults.encoders)
    except OutputOptionError as exc:
        raise InvalidParams(exc.message, code=exc.code) from exc


def resolve_output(options: OutputOptions, probe: MediaProbe, defaults: ParamDefaults) -> OutputOptions:
    """`codec=source` made concrete with the probed input's codec, and an encoder that keeps the
    source's exact frame size (`for_size`); `InvalidParams` (with the option's own code) when impossible."""
    try:
        resolved = for_source(options, probe.video_codec, defaults.encoders)
        return for_size(resolved, probe.width, probe.height, probe.pix_fmt, defaults.encoders)
    except OutputOptionError as exc:
        raise InvalidParams(exc.message, code=exc.code) from exc


def output_metadata(options: OutputOptions) -> dict[str, str]:
    """The options as object user metadata (`codec` as asked, so `source` stays `source`)."""
    values = {
        "codec": options.codec,
        "crf": None if options.crf is None else str(options.crf),
        "bitrate": None if options.bitrate is None else str(options.bitrate),
        "preset": options.preset,
        "dedupe": "true" if options.dedupe else None,
    }
    return normalise_keys(values)


def check_webhook_url(url: str, allowed: tuple[str, ...] = ()) -> None:
    """An absolute http(s) URL with a valid host, no credentials, whitespace or control characters.

    The host must be a host name by IDNA rules or an IP address; an address written literally must be
    public (loopback only where `allowed` names it), since the notifier would refuse it anyway.
    """
    problem = None
    if len(url) > MAX_URL_LENGTH:
        problem = f"longer than {MAX_URL_LENGTH} characters"
    elif not url.isascii():
        problem = "not ASCII (percent-encode the path and use the punycode form of the host)"
    elif any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        problem = "contains whitespace or control characters"
    else:
        try:
            parts = urlsplit(url)
            host = parts.hostname
            _ = parts.port  # raises on a bad port
        except ValueError:
            parts, host = None, None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
            problem = "not an absolute http:// or https:// URL"
        elif parts.username or parts.password:
            problem = "must not carry credentials"
        else:
            try:
                check_host(host)
                check_literal(host, allowed)
            except DestinationRefused as exc:
                raise InvalidParams(f"webhook-url={url[:80]!r}: {exc.message}", code=exc.code) from None
    if problem:
        raise InvalidParams(f"webhook-url={url[:80]!r} is {problem}; use http(s)://host/path")


def output_fps(params: JobParams, probe: MediaProbe) -> Fraction:
    """The exact output rate: input (average rate when VFR) × multiplier, or the target rate."""
    if params.target_fps is not None:
        return Fraction(params.target_fps)
    return input_fps(probe) * (params.multiplier or 1)


def input_fps(probe: MediaProbe) -> Fraction:
    """The rate the pipeline treats the input as: the average rate for VFR input, else the nominal one."""
    if probe.is_vfr and probe.avg_fps_num > 0 and probe.avg_fps_den > 0:
        return Fraction(probe.avg_fps_num, probe.avg_fps_den)
    return Fraction(probe.fps_num, probe.fps_den)


MAX_OUTPUT_FPS = 1000
"""The highest output rate: chunks travel in Matroska and Matroska output is written, both with 1 ms
timestamps (FFmpeg 5.1), which tell frames apart up to 1000 fps."""


def check_against_probe(params: JobParams, probe: MediaProbe) -> None:
    """A target rate must raise the frame rate, by at most ×8 (what the engines interpolate); no
    output rate may pass `MAX_OUTPUT_FPS` (`E_OUTPUT_RATE_UNSUPPORTED`, before any work)."""
    out = output_fps(params, probe)
    if out > MAX_OUTPUT_FPS:
        asked = f"target-fps={params.target_fps}" if params.target_fps else f"multiplier={params.multiplier}"
        raise InvalidParams(
            f"{asked} makes {float(out):g} fps from the input's {float(input_fps(probe)):g} fps; the output "
            f"is at most {MAX_OUTPUT_FPS} fps (its timestamps are in milliseconds): choose a lower "
            "multiplier or target-fps",
            code=RateUnsupportedError.code,
        )
    if params.target_fps is None:
        return
    source, target = input_fps(probe), Fraction(params.target_fps)
    if target <= source or target > source * max(MULTIPLIERS):
        raise InvalidParams(
            f"target-fps={params.target_fps} must be above the input's {format_fps(source)} fps and at "
            f"most {max(MULTIPLIERS)}× it ({format_fps(source * max(MULTIPLIERS))})"
        )
