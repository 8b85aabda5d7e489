"""The final encode keeps the exact rate, the pixel format, the colour tags, and copies audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from services.muxer.assemble import (
    OutputSpec,
    build_command,
    encoder_pix_fmt,
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
