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


def test_mov_keeps_the_ticks_and_rotation_matroska_takes_every_subtitle_and_the_fonts() -> None:
    streams = [
        {"index": 1, "codec_type": "audio", "codec_name": "pcm_s24le", "disposition": {"default": 1}},
        {"index": 2, "codec_type": "audio", "codec_name": "pcm_s16le", "disposition": {"comment": 1}},
        {"index": 3, "codec_type": "subtitle", "codec_name": "hdmv_pgs_subtitle"},
        {"index": 4, "codec_type": "subtitle", "codec_name": "mov_text", "disposition": {"forced": 1}},
    ]
    mov = remux_command(
        Path("v"), Path("s"), Path("o.mov"), streams[:2], timescale=600, rotation=90, container="mov"
    )
    assert (_after(mov, "-f"), _after(mov, "-video_track_timescale")) == ("mov", "600")
    assert _after(mov, "-metadata:s:v:0") == "rotate=90"
    mkv = remux_command(Path("v"), Path("s"), Path("o.mkv"), streams, timescale=600, container="mkv")
    assert _after(mkv, "-f") == "matroska"
    assert _pairs(mkv, "-map") == ["0:v:0", "1:a?", "1:s?", "1:t?"]
    assert _after(mkv, "-c:s") == "copy", "bitmap subtitles pass as they are"
    assert _after(mkv, "-c:s:1") == "subrip", "Matroska has no mov_text: the text becomes SRT"
    assert "-video_track_timescale" not in mkv
    assert "-movflags" not in mkv


def test_each_track_gets_exactly_its_sources_flags_and_no_default_of_ffmpegs_own() -> None:
    streams = [
        {"index": 1, "codec_type": "audio", "codec_name": "aac", "disposition": {"default": 0}},
        {"index": 2, "codec_type": "audio", "codec_name": "aac", "disposition": {"default": 1, "dub": 1}},
        {"index": 3, "codec_type": "subtitle", "codec_name": "subrip", "disposition": {"forced": 1}},
    ]
    command = remux_command(Path("v"), Path("s"), Path("o"), streams, timescale=600)
    flags = {arg: command[i + 1] for i, arg in enumerate(command) if arg.startswith("-disposition")}
    assert flags["-disposition:a:0"] == "0"
    assert flags["-disposition:a:1"] == "default+dub"
    assert flags["-disposition:s:0"] == "forced"
    assert flags["-disposition:v:0"] == "default"
