"""The final encode keeps the exact rate, the pixel format, the colour tags, and copies audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from services.muxer.assemble import (
    OutputSpec,
    build_command,
    encoder_pix_fmt,
    hdr_of,
    track_timescale,
    write_concat_list,
)


def _spec(**overrides: object) -> OutputSpec:
    values: dict[str, object] = {
        "rate": Fraction(60000, 1001), "pix_fmt": "yuv420p10le", "rotation": 0, "color_range": "tv",
        "color_space": "bt709", "color_transfer": "bt709", "color_primaries": "bt709", "crf": 16, "preset": "medium",
    }  # fmt: skip
    values.update(overrides)
    return OutputSpec(**values)  # type: ignore[arg-type]


def test_every_frame_lasts_a_whole_number_of_ticks_at_the_rational_rate() -> None:
    for rate in (Fraction(60000, 1001), Fraction(60), Fraction(48000, 1001), Fraction(50)):
        scale = track_timescale(rate)
        assert (Fraction(scale) / rate).denominator == 1
        assert scale >= 10_000


def test_the_command_stamps_exact_timestamps_copies_audio_and_keeps_colour() -> None:
    command = build_command(Path("l.ffconcat"), Path("src"), Path("out.mp4"), _spec(), [])
    assert command[command.index("-r") + 1] == "60000/1001"
    assert command[command.index("-vf") + 1] == "setpts=N*1001/(60000*TB)"
    assert command[command.index("-c:a") + 1] == "copy"
    assert command[command.index("-pix_fmt") + 1] == "yuv420p10le"
    assert command[command.index("-colorspace") + 1] == "bt709"
    assert all(arg.startswith("file:") for arg in command if arg.endswith(("src", "out.mp4", "l.ffconcat")))


def test_text_subtitles_are_carried_bitmap_ones_are_not_forced_into_mp4() -> None:
    text = build_command(
        Path("l"), Path("s"), Path("o"), _spec(), [{"codec_type": "subtitle", "codec_name": "subrip"}]
    )
    assert text[text.index("-c:s") + 1] == "mov_text"
    bitmap = build_command(
        Path("l"),
        Path("s"),
        Path("o"),
        _spec(),
        [{"codec_type": "subtitle", "codec_name": "hdmv_pgs_subtitle"}],
    )
    assert "1:s?" not in bitmap


def test_pixel_formats_libx264_lacks_map_to_the_same_depth() -> None:
    assert encoder_pix_fmt("yuv420p") == "yuv420p"
    assert encoder_pix_fmt("yuv422p10le") == "yuv422p10le"
    assert encoder_pix_fmt("yuv420p12le") == "yuv420p10le"
    assert encoder_pix_fmt("rgb24") == "yuv420p"


def test_the_concat_list_quotes_file_names(tmp_path: Path) -> None:
    listing = tmp_path / "list.ffconcat"
    write_concat_list(listing, [tmp_path / "00000.mkv", tmp_path / "it's.mkv"])
    lines = listing.read_text().splitlines()
    assert lines[0] == "ffconcat version 1.0"
    assert lines[2].endswith("it'\\''s.mkv'")


def test_an_ffmpeg_that_hangs_is_killed_by_its_timeout_with_a_clear_code() -> None:
    import time

    import pytest

    from services.muxer.assemble import MuxError, run_ffmpeg

    started = time.monotonic()
    with pytest.raises(MuxError) as error:
        run_ffmpeg(["sleep", "30"], timeout_s=0.5)
    assert error.value.code == "E_MUX_TIMEOUT"
    assert time.monotonic() - started < 5


def test_an_ffmpeg_failure_carries_its_last_words() -> None:
    import pytest

    from services.muxer.assemble import MuxError, run_ffmpeg

    with pytest.raises(MuxError) as error:
        run_ffmpeg(
            ["ffmpeg", "-v", "error", "-i", "file:/nonexistent/input.mkv", "-f", "null", "-"], timeout_s=30
        )
    assert error.value.code == "E_MUX_FAILED"
    assert "nonexistent" in error.value.message


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


def _hdr_spec(encoder: str, **overrides: object) -> OutputSpec:
    values: dict[str, object] = {
        "encoder": encoder, "pix_fmt": "yuv420p10le", "color_space": "bt2020nc", "color_transfer": "smpte2084",
        "color_primaries": "bt2020", "crf": None, "preset": None, "hdr": hdr_of(HDR_SIDE_DATA),
    }  # fmt: skip
    values.update(overrides)
    return _spec(**values)


def _after(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_hdr10_metadata_is_read_from_ffprobe_side_data() -> None:
    hdr = hdr_of(HDR_SIDE_DATA)
    assert hdr is not None
    assert hdr.mastering is not None
    assert hdr.mastering.red == (Fraction(34000, 50000), Fraction(16000, 50000))
    assert (hdr.mastering.max_luminance, hdr.mastering.min_luminance) == (1000, Fraction(1, 10000))
    assert (hdr.max_cll, hdr.max_fall) == (1000, 400)
    assert hdr_of([{"side_data_type": "Display Matrix", "rotation": 90}]) is None


def test_h265_carries_10_bit_colour_and_hdr10_metadata_in_x265s_units() -> None:
    command = build_command(Path("l"), Path("s"), Path("o.mp4"), _hdr_spec("libx265"), [])
    assert _after(command, "-c:v") == "libx265"
    assert _after(command, "-pix_fmt") == "yuv420p10le"
    assert _after(command, "-tag:v") == "hvc1", "the HEVC tag players expect in MP4"
    assert _after(command, "-crf") == "22", "the encoder's default CRF when none is asked"
    assert _after(command, "-preset") == "medium"
    assert _after(command, "-x265-params") == (
        "log-level=error:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)"
        "L(10000000,1):max-cll=1000,400"
    )
    assert (
        _after(command, "-color_primaries"),
        _after(command, "-color_trc"),
        _after(command, "-colorspace"),
    ) == (
        "bt2020",
        "smpte2084",
        "bt2020nc",
    )


def test_av1_through_svt_takes_hdr10_metadata_and_a_numeric_preset() -> None:
    command = build_command(Path("l"), Path("s"), Path("o"), _hdr_spec("libsvtav1", preset="10", crf=35), [])
    assert (_after(command, "-c:v"), _after(command, "-preset"), _after(command, "-crf")) == (
        "libsvtav1",
        "10",
        "35",
    )
    assert _after(command, "-svtav1-params") == (
        "mastering-display=G(0.2650,0.6900)B(0.1500,0.0600)R(0.6800,0.3200)WP(0.3127,0.3290)"
        "L(1000.0000,0.0001):content-light=1000,400"
    )
    four_four_four = build_command(
        Path("l"), Path("s"), Path("o"), _hdr_spec("libsvtav1", pix_fmt="yuv444p10le"), []
    )
    assert _after(four_four_four, "-pix_fmt") == "yuv420p10le", "SVT-AV1 takes 4:2:0 only; depth is kept"


def test_libaom_uses_cpu_used_and_pure_crf_and_a_bitrate_replaces_the_crf() -> None:
    aom = build_command(
        Path("l"), Path("s"), Path("o"), _spec(encoder="libaom-av1", crf=None, preset=None), []
    )
    assert (_after(aom, "-cpu-used"), _after(aom, "-crf"), _after(aom, "-b:v")) == ("6", "30", "0")
    capped = build_command(Path("l"), Path("s"), Path("o"), _spec(encoder="libx264", bitrate=8_000_000), [])
    assert _after(capped, "-b:v") == "8000000"
    assert "-crf" not in capped
