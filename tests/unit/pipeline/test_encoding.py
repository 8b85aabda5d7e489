"""Every worker encodes its chunk the same way: closed GOPs, the source's depth, colour and HDR metadata."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from infiniteflow_common.encoding import (
    Mastering,
    encoder_args,
    encoder_pix_fmt,
    encoding_for,
    hdr_of,
    hdr_of_encoding,
)
from infiniteflow_common.events import VideoEncoding
from infiniteflow_common.output import OutputOptions

HDR_SIDE_DATA = [
    {
        "side_data_type": "Mastering display metadata",
        "red_x": "34000/50000", "red_y": "16000/50000", "green_x": "13250/50000", "green_y": "34500/50000",
        "blue_x": "7500/50000", "blue_y": "3000/50000", "white_point_x": "15635/50000",
        "white_point_y": "16450/50000", "min_luminance": "1/10000", "max_luminance": "10000000/10000",
    },
    {"side_data_type": "Content light level metadata", "max_content": 1000, "max_average": 400},
    {"side_data_type": "H.26[45] User Data Unregistered SEI message"},
]  # fmt: skip
SDR = {
    "pix_fmt": "yuv420p10le", "color_range": "tv", "color_space": "bt709", "color_transfer": "bt709",
    "color_primaries": "bt709",
}  # fmt: skip
HDR10 = {
    "pix_fmt": "yuv420p10le", "color_range": "tv", "color_space": "bt2020nc", "color_transfer": "smpte2084",
    "color_primaries": "bt2020",
}  # fmt: skip


def _after(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _hdr_encoding(encoder: str, **overrides: Any) -> VideoEncoding:
    hdr = hdr_of(HDR_SIDE_DATA)
    assert hdr is not None
    assert hdr.mastering is not None
    values: dict[str, Any] = {
        "encoder": encoder, **HDR10, "mastering_display": hdr.mastering.as_rationals(),
        "max_cll": hdr.max_cll, "max_fall": hdr.max_fall,
    }  # fmt: skip
    return VideoEncoding(**(values | overrides))


def test_pixel_formats_an_encoder_lacks_map_to_the_same_depth() -> None:
    assert encoder_pix_fmt("yuv420p") == "yuv420p"
    assert encoder_pix_fmt("yuv422p10le") == "yuv422p10le"
    assert encoder_pix_fmt("yuv420p12le") == "yuv420p10le"
    assert encoder_pix_fmt("rgb24") == "yuv420p"
    assert encoder_pix_fmt("yuv420p12le", "libx265") == "yuv420p12le"
    assert encoder_pix_fmt("yuv444p10le", "libsvtav1") == "yuv420p10le"
    assert encoder_pix_fmt("yuv444p", "libsvtav1") == "yuv420p"


def test_hdr10_metadata_is_read_from_ffprobe_side_data() -> None:
    hdr = hdr_of(HDR_SIDE_DATA)
    assert hdr is not None
    assert hdr.mastering is not None
    assert hdr.mastering.red == (Fraction(34000, 50000), Fraction(16000, 50000))
    assert (hdr.mastering.max_luminance, hdr.mastering.min_luminance) == (1000, Fraction(1, 10000))
    assert (hdr.max_cll, hdr.max_fall) == (1000, 400)
    assert hdr_of([{"side_data_type": "Display Matrix", "rotation": 90}]) is None
    partial = hdr_of([{**HDR_SIDE_DATA[0], "red_x": None}])
    assert partial is None, "a display with a value missing is dropped whole"


def test_the_mastering_display_survives_the_wire_exactly() -> None:
    hdr = hdr_of(HDR_SIDE_DATA)
    assert hdr is not None
    assert hdr.mastering is not None
    wire = hdr.mastering.as_rationals()
    assert len(wire) == 10
    assert wire[:2] == ("53/200", "69/100"), "green first, as exact fractions"
    assert Mastering.from_rationals(wire) == hdr.mastering
    assert hdr_of_encoding(_hdr_encoding("libx265")) == hdr
    assert hdr_of_encoding(VideoEncoding(encoder="libx264", pix_fmt="yuv420p")) is None


def test_h264_chunks_are_closed_gops_with_the_sources_colour() -> None:
    args = encoder_args(VideoEncoding(encoder="libx264", crf=16, preset="medium", **SDR))
    assert (_after(args, "-c:v"), _after(args, "-crf"), _after(args, "-preset")) == (
        "libx264",
        "16",
        "medium",
    )
    assert _after(args, "-flags") == "+cgop"
    assert _after(args, "-pix_fmt") == "yuv420p10le"
    assert (
        _after(args, "-color_range"),
        _after(args, "-colorspace"),
        _after(args, "-color_trc"),
        _after(args, "-color_primaries"),
    ) == ("tv", "bt709", "bt709", "bt709")
    assert "-x265-params" not in args
    assert "-b:v" not in args


def test_unknown_or_missing_colour_is_not_tagged() -> None:
    args = encoder_args(
        VideoEncoding(encoder="libx264", pix_fmt="yuv420p", crf=20, color_space="unknown", color_range="pc")
    )
    assert _after(args, "-color_range") == "pc"
    assert not {"-colorspace", "-color_trc", "-color_primaries"} & set(args)


def test_h265_has_no_open_gop_and_carries_hdr10_metadata_in_x265s_units() -> None:
    args = encoder_args(_hdr_encoding("libx265"))
    assert _after(args, "-c:v") == "libx265"
    assert _after(args, "-pix_fmt") == "yuv420p10le"
    assert _after(args, "-crf") == "22", "the encoder's default CRF when none is asked"
    assert _after(args, "-preset") == "medium"
    assert _after(args, "-x265-params") == (
        "log-level=error:open-gop=0:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)"
        "L(10000000,1):max-cll=1000,400"
    )
    assert (
        _after(args, "-color_primaries"),
        _after(args, "-color_trc"),
        _after(args, "-colorspace"),
    ) == ("bt2020", "smpte2084", "bt2020nc")
    sdr = encoder_args(VideoEncoding(encoder="libx265", **SDR))
    assert _after(sdr, "-x265-params") == "log-level=error:open-gop=0", "closed GOPs with or without HDR"


def test_av1_through_svt_takes_hdr10_metadata_and_a_numeric_preset() -> None:
    args = encoder_args(_hdr_encoding("libsvtav1", preset="10", crf=35))
    assert (_after(args, "-c:v"), _after(args, "-preset"), _after(args, "-crf")) == ("libsvtav1", "10", "35")
    assert _after(args, "-svtav1-params") == (
        "mastering-display=G(0.2650,0.6900)B(0.1500,0.0600)R(0.6800,0.3200)WP(0.3127,0.3290)"
        "L(1000.0000,0.0001):content-light=1000,400"
    )
    four_four_four = encoder_args(_hdr_encoding("libsvtav1", pix_fmt="yuv444p10le"))
    assert _after(four_four_four, "-pix_fmt") == "yuv420p10le", "SVT-AV1 takes 4:2:0 only; depth is kept"
    assert _after(four_four_four, "-preset") == "8", "SVT-AV1's default preset"
    sdr = encoder_args(VideoEncoding(encoder="libsvtav1", **SDR))
    assert "-svtav1-params" not in sdr


def test_libaom_uses_cpu_used_and_pure_crf_and_a_bitrate_replaces_the_crf() -> None:
    aom = encoder_args(VideoEncoding(encoder="libaom-av1", pix_fmt="yuv420p"))
    assert (_after(aom, "-cpu-used"), _after(aom, "-crf"), _after(aom, "-b:v")) == ("6", "30", "0")
    assert _after(aom, "-row-mt") == "1"
    assert "-preset" not in aom
    capped = encoder_args(VideoEncoding(encoder="libx264", pix_fmt="yuv420p", bitrate=8_000_000))
    assert _after(capped, "-b:v") == "8000000"
    assert "-crf" not in capped
    aom_capped = encoder_args(VideoEncoding(encoder="libaom-av1", pix_fmt="yuv420p", bitrate=2_000_000))
    assert _after(aom_capped, "-b:v") == "2000000"
    assert "-crf" not in aom_capped


def test_the_jobs_encoding_is_the_users_options_over_the_defaults_and_the_sources_colour() -> None:
    probe = {"pix_fmt": "yuv420p10le", **{k: v for k, v in HDR10.items() if k != "pix_fmt"}}
    plain = encoding_for(OutputOptions(), {"pix_fmt": "yuv420p"}, None, x264_crf=16, x264_preset="slow")
    assert (plain.encoder, plain.crf, plain.preset, plain.bitrate) == ("libx264", 16, "slow", None)
    assert (plain.color_space, plain.mastering_display, plain.max_cll) == (None, None, None)
    hevc = encoding_for(
        OutputOptions(codec="h265", encoder="libx265"),
        probe,
        hdr_of(HDR_SIDE_DATA),
        x264_crf=16,
        x264_preset="slow",
    )
    assert (hevc.encoder, hevc.crf, hevc.preset, hevc.pix_fmt) == ("libx265", None, None, "yuv420p10le")
    assert (hevc.color_transfer, hevc.max_cll, hevc.max_fall) == ("smpte2084", 1000, 400)
    assert hevc.mastering_display is not None
    assert hevc == _hdr_encoding("libx265")
    capped = encoding_for(
        OutputOptions(bitrate=5_000_000, crf=18),
        {"pix_fmt": "yuv420p"},
        None,
        x264_crf=16,
        x264_preset="slow",
    )
    assert (capped.bitrate, capped.crf) == (5_000_000, None), "a bitrate replaces the CRF"
    chosen = encoding_for(OutputOptions(crf=12, preset="fast"), {}, None, x264_crf=16, x264_preset="slow")
    assert (chosen.crf, chosen.preset, chosen.pix_fmt) == (12, "fast", "yuv420p")
