"""The safe probe on real files: good clips map exactly, hostile ones get their own error code.

Files are probed the way ingest does it: copied to a scratch name our code chose (`source`).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from infiniteflow_common.events import MediaProbe
from services.ingest.config import IngestSettings
from services.ingest.probe import ProbeError, ProbeLimits, limits_from, network_jail, probe_file
from tests.support.clips import hostile, video

pytestmark = [pytest.mark.ffmpeg]

LIMITS = limits_from(IngestSettings())


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("media")
    files = hostile(directory)
    files["clip"] = video(directory / "clip.mp4")
    files["ten_bit_odd"] = video(
        directory / "odd.mp4",
        size="321x181",
        rate="24000/1001",
        seconds=1,
        pix_fmt="yuv444p10le",
        audio=False,
    )
    return files


async def _probe(source: Path, tmp_path: Path, limits: ProbeLimits = LIMITS, factor: int = 2) -> MediaProbe:
    scratch = tmp_path / "source"
    shutil.copyfile(source, scratch)
    return await probe_file(scratch.resolve(), limits, frame_factor=Fraction(factor))


async def _code(source: Path, tmp_path: Path, limits: ProbeLimits = LIMITS) -> str:
    with pytest.raises(ProbeError) as caught:
        await _probe(source, tmp_path, limits)
    return caught.value.code


async def test_a_clip_with_audio_is_probed_exactly(media: dict[str, Path], tmp_path: Path) -> None:
    probe = await _probe(media["clip"], tmp_path)
    assert probe.model_dump() | {"duration_s": round(probe.duration_s, 2)} == {
        "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
        "video_codec": "h264",
        "width": 320,
        "height": 180,
        "pix_fmt": "yuv420p",
        "bit_depth": 8,
        "fps_num": 30,
        "fps_den": 1,
        "avg_fps_num": 30,
        "avg_fps_den": 1,
        "frame_count": 60,
        "duration_s": 2.0,
        "start_time_s": 0.0,
        "is_vfr": False,
        "rotation": 0,
        "color_range": None,
        "color_space": None,
        "color_transfer": None,
        "color_primaries": None,
        "has_audio": True,
        "audio_streams": 1,
        "subtitle_streams": 0,
        "packets_constant_rate": True,
    }


async def test_ten_bit_and_odd_sizes_are_reported_as_they_are(media: dict[str, Path], tmp_path: Path) -> None:
    probe = await _probe(media["ten_bit_odd"], tmp_path)
    assert (probe.width, probe.height, probe.pix_fmt, probe.bit_depth) == (
        321,
        181,
        "yuv444p10le",
        10,
    )
    assert (probe.fps_num, probe.fps_den, probe.frame_count) == (24000, 1001, 24)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("empty", "E_PROBE_EMPTY"),
        ("text", "E_PROBE_UNREADABLE"),
        ("truncated", "E_PROBE_UNREADABLE"),
        ("hls", "E_PROBE_FORMAT_NOT_ALLOWED"),
        ("concat", "E_PROBE_FORMAT_NOT_ALLOWED"),
        ("image", "E_PROBE_FORMAT_NOT_ALLOWED"),
        ("audio", "E_PROBE_NO_VIDEO"),
        ("single", "E_PROBE_SINGLE_FRAME"),
        ("external_ref", "E_PROBE_EXTERNAL_REFERENCE"),
        ("many_streams", "E_PROBE_TOO_MANY_STREAMS"),
    ],
)
async def test_hostile_and_broken_files_get_their_own_code(
    media: dict[str, Path], tmp_path: Path, name: str, code: str
) -> None:
    assert await _code(media[name], tmp_path) == code


async def test_limits_refuse_big_pictures_frame_bombs_many_streams_and_slow_files(
    media: dict[str, Path], tmp_path: Path
) -> None:
    clip = media["clip"]
    assert await _code(clip, tmp_path, replace(LIMITS, max_width=256)) == "E_PROBE_TOO_LARGE"
    assert await _code(clip, tmp_path, replace(LIMITS, max_output_frames=100)) == "E_PROBE_TOO_MANY_FRAMES"
    assert await _code(clip, tmp_path, replace(LIMITS, max_streams=1)) == "E_PROBE_TOO_MANY_STREAMS"
    assert await _code(clip, tmp_path, replace(LIMITS, max_fps=25)) == "E_PROBE_BAD_FRAME_RATE"
    assert await _code(clip, tmp_path, replace(LIMITS, timeout_s=0.001)) == "E_PROBE_TIMEOUT"


def test_ffprobe_runs_without_any_network(tmp_path: Path) -> None:
    """Where the machine allows a network namespace, ffprobe cannot reach even this machine's services."""
    import socket
    import subprocess
    import sys

    jail = network_jail()
    assert jail, "this machine allows no network namespace (unshare --net, as root or in a user namespace)"
    assert LIMITS.jail == jail, "the default settings use it"
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        outside = subprocess.run([sys.executable, "-c", connect], capture_output=True, check=False)
        inside = subprocess.run([*jail, sys.executable, "-c", connect], capture_output=True, check=False)
    assert outside.returncode == 0
    assert inside.returncode != 0
    assert b"Network is unreachable" in inside.stderr or b"refused" in inside.stderr


@pytest.fixture
def variable_rate_clip(tmp_path: Path) -> Path:
    """60 frames at 30 fps, then at 15 fps: a rate that changes after the first second."""
    variable = tmp_path / "vfr.mkv"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30:duration=2",
         "-vf", "setpts='if(lt(N,40),N,2*N-40)/30/TB'", "-fps_mode", "passthrough", "-c:v", "libx264",
         str(variable)],
        check=True,
    )  # fmt: skip
    return variable


async def test_a_variable_rate_clip_is_not_planned_while_it_is_read(
    variable_rate_clip: Path, tmp_path: Path
) -> None:
    probe = await _probe(variable_rate_clip, tmp_path)
    assert probe.frame_count == 60
    assert probe.packets_constant_rate is False, "its rate changes after the first second"


async def test_a_file_with_more_packets_than_the_frame_limit_is_refused_while_they_are_read(
    media: dict[str, Path], tmp_path: Path
) -> None:
    tight = replace(LIMITS, max_output_frames=10)
    scratch = tmp_path / "source"
    shutil.copyfile(media["clip"], scratch)
    with pytest.raises(ProbeError) as caught:
        await probe_file(scratch.resolve(), tight)  # no multiplier yet: only the packet count can refuse it
    assert caught.value.code == "E_PROBE_TOO_MANY_FRAMES"
