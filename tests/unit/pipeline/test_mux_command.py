"""The final mux copies everything: the concatenated video with exact ticks, the source's audio, text subtitles."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import pytest

from services.muxer.assemble import MuxError, remux_command, run_ffmpeg, track_timescale


def _after(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _pairs(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == flag]


def test_every_frame_lasts_a_whole_number_of_ticks_at_the_rational_rate() -> None:
    for rate in (Fraction(60000, 1001), Fraction(60), Fraction(48000, 1001), Fraction(50), Fraction(240)):
        scale = track_timescale(rate)
        assert (Fraction(scale) / rate).denominator == 1
        assert scale >= 10_000


def test_the_command_copies_video_and_audio_keeps_the_ticks_and_opens_only_files() -> None:
    command = remux_command(
        Path("v.mp4"), Path("src"), Path("out.mp4"), [{"codec_type": "audio"}], timescale=60000
    )
    assert command[0] == "ffmpeg"
    assert _after(command, "-c:v") == "copy", "the workers' encode is the final one"
    assert _after(command, "-c:a") == "copy"
    assert _after(command, "-video_track_timescale") == "60000"
    assert _pairs(command, "-map") == ["0:v:0", "1:a?"]
    assert (_after(command, "-map_metadata"), _after(command, "-map_chapters")) == ("1", "1")
    assert _pairs(command, "-protocol_whitelist") == ["file", "file"]
    assert all(arg.startswith("file:") for arg in command if arg.endswith(("src", "out.mp4", "v.mp4")))
    assert command[-1] == "file:out.mp4"
    assert "-vf" not in command
    assert "-r" not in command
    assert "-metadata:s:v:0" not in command, "no rotation asked"


def test_text_subtitles_are_carried_bitmap_ones_are_not_forced_into_mp4() -> None:
    def command(*codecs: str) -> list[str]:
        streams = [{"codec_type": "subtitle", "codec_name": codec} for codec in codecs]
        return remux_command(Path("v"), Path("s"), Path("o"), streams, timescale=600)

    text = command("subrip")
    assert "1:s?" in _pairs(text, "-map")
    assert _after(text, "-c:s") == "mov_text"
    assert _after(command("mov_text"), "-c:s") == "copy", "MP4's own text subtitles are copied as they are"
    assert _after(command("mov_text", "ass"), "-c:s") == "mov_text"
    for bitmap in (command("hdmv_pgs_subtitle"), command("subrip", "dvd_subtitle")):
        assert "1:s?" not in bitmap
        assert "-c:s" not in bitmap


def test_the_display_rotation_is_written_as_the_streams_rotate_tag() -> None:
    for rotation, tag in ((90, "rotate=90"), (-90, "rotate=270"), (450, "rotate=90")):
        command = remux_command(Path("v"), Path("s"), Path("o"), [], timescale=600, rotation=rotation)
        assert _after(command, "-metadata:s:v:0") == tag
    unrotated = remux_command(Path("v"), Path("s"), Path("o"), [], timescale=600, rotation=360)
    assert "-metadata:s:v:0" not in unrotated


def test_an_ffmpeg_that_hangs_is_killed_by_its_timeout_with_a_clear_code() -> None:
    started = time.monotonic()
    with pytest.raises(MuxError) as error:
        run_ffmpeg(["sleep", "30"], timeout_s=0.5)
    assert error.value.code == "E_MUX_TIMEOUT"
    assert time.monotonic() - started < 5


@pytest.mark.ffmpeg
def test_an_ffmpeg_failure_carries_its_last_words() -> None:
    with pytest.raises(MuxError) as error:
        run_ffmpeg(
            ["ffmpeg", "-v", "error", "-i", "file:/nonexistent/input.mkv", "-f", "null", "-"], timeout_s=30
        )
    assert error.value.code == "E_MUX_FAILED"
    assert "nonexistent" in error.value.message
