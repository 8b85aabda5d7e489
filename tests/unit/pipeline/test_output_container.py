"""The output container is chosen from the source's streams, and the final mux carries them all untouched."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infiniteflow_common.streams import Container, StreamUnsupportedError, plan_streams
from services.muxer.assemble import remux_command, run_ffmpeg
from tests.support.clips import audio_packets, pcm_mov_clip, probe, stream_tags, styled_subtitle_clip


def _stream(index: int, kind: str, codec: str, **extra: Any) -> dict[str, Any]:
    return {"index": index, "codec_type": kind, "codec_name": codec, **extra}


VIDEO = _stream(0, "video", "h264")


def _container(*streams: dict[str, Any], codec: str = "h264", rotation: int = 0) -> str:
    return plan_streams([VIDEO, *streams], video_codec=codec, rotation=rotation).container


def test_what_mp4_carries_stays_mp4() -> None:
    assert _container() == "mp4"
    for codec in ("aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"):
        assert _container(_stream(1, "audio", codec)) == "mp4", codec
    assert _container(_stream(1, "audio", "aac"), _stream(2, "subtitle", "subrip")) == "mp4"
    assert _container(_stream(1, "subtitle", "mov_text"), codec="av1") == "mp4"
    plan = plan_streams([VIDEO, _stream(1, "audio", "aac")], video_codec="h264")
    assert (plan.extension, plan.losses) == (".mp4", ())


def test_pcm_goes_to_mov_which_keeps_exact_timing_and_rotation() -> None:
    two_pcm = (_stream(1, "audio", "pcm_s16le"), _stream(2, "audio", "pcm_s24le"))
    plan = plan_streams([VIDEO, *two_pcm], video_codec="h264", rotation=90)
    assert plan.container == "mov"
    assert "pcm_s16le" in plan.reason, plan.reason
    assert "pcm_s24le" in plan.reason, plan.reason
    for codec in ("pcm_s16be", "pcm_f32be", "pcm_s8", "pcm_f64le"):
        assert _container(_stream(1, "audio", codec)) == "mov", codec
    assert _container(_stream(1, "audio", "pcm_s24le"), _stream(2, "subtitle", "subrip")) == "mov"


def test_what_neither_mp4_nor_mov_carries_goes_to_matroska() -> None:
    for codec in ("dts", "truehd", "mp2", "vorbis", "wavpack"):
        assert _container(_stream(1, "audio", codec)) == "mkv", codec
    for codec in ("hdmv_pgs_subtitle", "dvd_subtitle", "ass", "ssa"):
        assert _container(_stream(1, "audio", "aac"), _stream(2, "subtitle", codec)) == "mkv", codec
    assert _container(_stream(1, "audio", "pcm_s16le"), codec="av1") == "mkv", "no AV1 in MOV"


def test_tags_mp4_would_drop_choose_a_container_that_keeps_them() -> None:
    titled = _stream(1, "audio", "aac", tags={"title": "Director's commentary", "language": "eng"})
    assert _container(titled) == "mkv"
    commentary = _stream(1, "audio", "aac", disposition={"default": 0, "comment": 1})
    assert _container(commentary) == "mp4", "MP4 keeps the commentary flag"
    german_pcm = _stream(1, "audio", "pcm_s24le", tags={"language": "deu"})
    assert _container(german_pcm) == "mkv", "MOV drops the language code deu"
    assert _container(_stream(1, "audio", "pcm_s24le", tags={"language": "ger"})) == "mov"
    # rotated: Matroska is out, so MOV is taken and the result says what it drops
    plan = plan_streams([VIDEO, german_pcm], video_codec="h264", rotation=270)
    assert plan.container == "mov"
    assert plan.losses == ("audio stream #1 (pcm_s24le, deu): language deu",)


def test_a_stream_no_container_carries_is_refused_naming_it() -> None:
    with pytest.raises(StreamUnsupportedError) as refused:
        _container(_stream(1, "audio", "aac"), _stream(2, "audio", "dts"), rotation=90)
    assert refused.value.code == "E_STREAM_UNSUPPORTED"
    assert "audio stream #2 (dts)" in refused.value.message
    assert "rotation" in refused.value.message
    with pytest.raises(StreamUnsupportedError) as unknown:
        _container(_stream(1, "audio", "adpcm_ima_qt"))
    assert "audio stream #1 (adpcm_ima_qt)" in unknown.value.message
    with pytest.raises(StreamUnsupportedError) as apart:
        _container(_stream(1, "audio", "pcm_f32be"), _stream(2, "subtitle", "hdmv_pgs_subtitle"))
    assert "no one output container" in apart.value.message
    assert "pcm_f32be" in apart.value.message
    assert "hdmv_pgs_subtitle" in apart.value.message


def test_data_streams_cover_art_and_attachments_do_not_decide() -> None:
    others = (
        _stream(1, "data", "bin_data"),
        _stream(2, "video", "mjpeg", disposition={"attached_pic": 1}),
        _stream(3, "attachment", "ttf"),
    )
    assert _container(*others) == "mp4"


def _mux(tmp_path: Path, source: Path, container: Container) -> Path:
    video = tmp_path / "video.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-map", "0:v:0", "-c", "copy", str(video)],
        check=True,
    )
    probed = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(source)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    streams = json.loads(probed.stdout)["streams"]
    assert plan_streams(streams, video_codec="h264").container == container
    out = tmp_path / f"out.{container}"
    run_ffmpeg(remux_command(video, source, out, streams, timescale=12800, container=container), 60)
    return out


@pytest.mark.ffmpeg
def test_two_pcm_tracks_of_a_mov_come_out_packet_for_packet_with_their_tags(tmp_path: Path) -> None:
    clip = pcm_mov_clip(tmp_path / "camera.mov")
    out = _mux(tmp_path, clip.path, "mov")
    for index in (0, 1):
        assert audio_packets(out, index) == audio_packets(clip.path, index), f"audio {index} bit-exact"
    assert stream_tags(probe(out), "audio") == stream_tags(probe(clip.path), "audio")


@pytest.mark.ffmpeg
def test_ass_subtitles_keep_their_styles_titles_and_flags_in_matroska(tmp_path: Path) -> None:
    clip = styled_subtitle_clip(tmp_path / "anime.mkv")
    out = _mux(tmp_path, clip.path, "mkv")
    before, after = probe(clip.path), probe(out)
    assert stream_tags(after, "subtitle") == stream_tags(before, "subtitle")
    assert stream_tags(after, "audio") == stream_tags(before, "audio")
    assert audio_packets(out, 0) == audio_packets(clip.path, 0)
