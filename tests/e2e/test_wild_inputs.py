"""Files as cameras, phones, broadcast and older tools write them come out exact.

Each clip has two scene cuts at frames that are not keyframes (a fixed GOP, as a camera writes it) and
the pipeline's chunks are short, so most chunks begin mid-GOP. For every clip: the output has exactly
multiplier × the source's frames, every source frame sits at its output position (closer to it than to
its neighbours), the offset between video and audio is kept within one output frame, the sample aspect
ratio is kept, and the audio decodes to the same samples.

These run the five services as processes against the real Kafka, MinIO, PostgreSQL and FFmpeg.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infiniteflow_common.media import decode_video
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.clips import decoded_audio_md5, probe, psnr, textured, video_stream
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess

pytestmark = WHOLE_PIPELINE

RATE = 25
FRAMES = 60
CUTS = (19, 41)  # neither is a keyframe: the GOP is 48 frames
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "8", "-g", "48", "-keyint_min", "48",
        "-sc_threshold", "0", "-pix_fmt", "yuv420p"]  # fmt: skip
X265 = "keyint=48:min-keyint=48:scenecut=0:open-gop=1:log-level=error"
AAC = ["-c:a", "aac", "-b:a", "96k"]


@dataclass(frozen=True)
class WildClip:
    """How to make one clip, and what to ask of the pipeline."""

    suffix: str
    video: list[str]
    audio: list[str] = field(default_factory=lambda: list(AAC))
    multiplier: int = 2
    options: dict[str, str] = field(default_factory=dict)
    size: tuple[int, int] = (192, 108)
    video_delay_s: float = 0.0  # > 0: the video starts after the audio; < 0: the audio after the video
    extra: list[str] = field(default_factory=list)


CLIPS: dict[str, WildClip] = {
    "camera-mpegts-h264-aac": WildClip("ts", [*X264, "-bf", "3"], extra=["-f", "mpegts"]),
    "camera-mpegts-x4": WildClip("ts", [*X264, "-bf", "3"], multiplier=4, extra=["-f", "mpegts"]),
    "mp4-without-edit-list": WildClip("mp4", [*X264, "-bf", "2"], extra=["-use_editlist", "0"]),
    "flv-h264-aac": WildClip("flv", [*X264, "-bf", "2"], extra=["-f", "flv"]),
    "video-half-a-second-after-audio": WildClip("mp4", [*X264, "-bf", "2"], video_delay_s=0.5),
    "audio-after-video": WildClip("mkv", [*X264, "-bf", "2"], video_delay_s=-0.3),
    "avi-mpeg4-mp3": WildClip(
        "avi", ["-c:v", "mpeg4", "-q:v", "2", "-g", "48", "-bf", "2"], audio=["-c:a", "libmp3lame"]
    ),
    "phone-hevc-open-gop-to-h265": WildClip(
        "mp4",
        [
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-tag:v",
            "hvc1",
            "-x265-params",
            "keyint=48:min-keyint=48:scenecut=0:open-gop=1:log-level=error",
        ],
        options={"codec": "h265"},
    ),
    "h264-to-av1": WildClip("mp4", [*X264, "-bf", "2"], options={"codec": "av1"}),
    "anamorphic-pal": WildClip("mp4", [*X264, "-bf", "2", "-aspect", "4:3"], size=(720, 576)),
    "webm-vp9-opus": WildClip(
        "webm",
        ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "48", "-pix_fmt", "yuv420p"],
        audio=["-c:a", "libopus", "-b:a", "64k"],
    ),
}


def make_clip(path: Path, clip: WildClip) -> None:
    """A texture panning 3 px a frame, a new texture at each cut, with a tone of the same length."""
    width, height = clip.size
    textures = [textured(width + 3 * FRAMES, height, seed) for seed in (1, 7, 13)]
    raw = bytearray()
    for index in range(FRAMES):
        scene = sum(index >= cut for cut in CUTS)
        raw += np.ascontiguousarray(textures[scene][:, 3 * index : 3 * index + width]).tobytes()
    seconds = FRAMES / RATE
    video_in = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(RATE)]
    audio_in = ["-f", "lavfi"]
    if clip.video_delay_s > 0:
        video_in = ["-itsoffset", str(clip.video_delay_s), *video_in]
    elif clip.video_delay_s < 0:
        audio_in = ["-itsoffset", str(-clip.video_delay_s), *audio_in]
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *video_in, "-i", "pipe:0",
         *audio_in, "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-map", "0:v", "-map", "1:a", "-fps_mode", "passthrough", *clip.video, *clip.audio, *clip.extra,
         str(path)],
        input=bytes(raw), capture_output=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()


def _frames(path: Path) -> np.ndarray[Any, Any]:
    """Every frame as the pipeline decodes it (presentation order, none added or dropped), as RGB."""
    return np.stack([frame.to_ndarray(format="rgb24") for frame in decode_video(path)])


def _start(info: dict[str, Any], kind: str) -> Fraction:
    stream = next(s for s in info["streams"] if s["codec_type"] == kind)
    return Fraction(stream["start_time"])


def _sar(info: dict[str, Any]) -> str:
    sar = video_stream(info).get("sample_aspect_ratio", "1:1")
    return "1:1" if sar in ("0:1", "N/A") else str(sar)


@pytest.fixture(scope="module")
def finished(
    pipeline: list[ServiceProcess], settings: CommonSettings, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, dict[str, Any], Path | None]]:
    """Every clip dropped at once (the fleet shares the work), then each job's source, row and output."""
    workdir = tmp_path_factory.mktemp("wild")
    client = make_client(settings)
    keys = {}
    for name, clip in CLIPS.items():
        path = workdir / f"{name}.{clip.suffix}"
        make_clip(path, clip)
        keys[name] = f"e2e/wild/{workdir.name}/{path.name}"
        metadata = {"multiplier": str(clip.multiplier), "engine": "flow", **clip.options}
        client.fput_object(settings.incoming_bucket, keys[name], str(path), metadata=metadata)

    async def wait_all() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(*(wait_for_job(settings, key=k, timeout_s=600) for k in keys.values()))
        )

    rows = asyncio.run(wait_all())
    results: dict[str, tuple[Path, dict[str, Any], Path | None]] = {}
    for (name, clip), row in zip(CLIPS.items(), rows, strict=True):
        source = workdir / f"{name}.{clip.suffix}"
        out: Path | None = None
        if row["status"] in ("completed", "completed_with_warnings"):
            out = workdir / f"{name}.out{Path(row['output_key']).suffix}"
            client.fget_object(row["output_bucket"], row["output_key"], str(out))
        results[name] = (source, row, out)
    return results


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_a_wild_input_comes_out_exact(
    name: str, finished: dict[str, tuple[Path, dict[str, Any], Path | None]]
) -> None:
    clip = CLIPS[name]
    source, row, out = finished[name]
    assert out is not None, (row["status"], row["error_code"], row["error_message"])
    before, after = probe(source), probe(out)
    m = clip.multiplier

    assert int(video_stream(before)["nb_read_frames"]) == FRAMES, (
        "the clip as made: no frame added to fill a gap"
    )
    assert int(video_stream(after)["nb_read_frames"]) == m * FRAMES, (
        "exactly multiplier × the source's frames"
    )
    src, dst = _frames(source), _frames(out)
    assert (dst.shape[1], dst.shape[2]) == (src.shape[1], src.shape[2]), "the source's frame size"
    misplaced = []
    for k in range(FRAMES):
        here = psnr(dst[k * m], src[k])
        neighbours = [psnr(dst[k * m], src[j]) for j in (k - 1, k + 1) if 0 <= j < FRAMES]
        if here < 30 or any(here < other + 3 for other in neighbours):
            misplaced.append(f"source frame {k}: {here:.1f} dB at output {k * m}, neighbours {neighbours}")
    assert misplaced == [], "every source frame at its output position:\n" + "\n".join(misplaced[:10])

    one_frame = Fraction(1, RATE * m)
    offset_before = _start(before, "video") - _start(before, "audio")
    offset_after = _start(after, "video") - _start(after, "audio")
    assert abs(offset_after - offset_before) <= one_frame, (
        f"video − audio start: source {float(offset_before):+.3f} s, output {float(offset_after):+.3f} s"
    )
    assert _sar(after) == _sar(before), "the sample aspect ratio (the picture's display shape)"
    assert decoded_audio_md5(out) == decoded_audio_md5(source), "the audio decodes to the same samples"
