"""Small test clips made with ffmpeg, good and hostile, for the ingest tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; fail the test with its log when it fails."""
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, timeout=60)


def video(
    path: Path,
    *,
    size: str = "320x180",
    rate: str = "30",
    seconds: float = 2.0,
    pix_fmt: str = "yuv420p",
    audio: bool = True,
) -> Path:
    """A testsrc2 clip (H.264, AAC when `audio`), `size` exact even when odd."""
    width, height = size.split("x")
    args = ["-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    args += ["-t", str(seconds), "-vf", f"scale={width}:{height}", "-c:v", "libx264", "-pix_fmt", pix_fmt]
    args += ["-c:a", "aac", "-shortest"] if audio else []
    ffmpeg(*args, str(path))
    return path


def hostile(directory: Path) -> dict[str, Path]:
    """Files that must be refused, each named like a video."""
    files = {
        "empty": directory / "empty.mp4",
        "text": directory / "text.mp4",
        "hls": directory / "hls.mp4",
        "concat": directory / "concat.mp4",
        "image": directory / "image.mp4",
        "audio": directory / "audio.mp4",
        "single": directory / "single.mp4",
        "truncated": directory / "truncated.mp4",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a video\n" * 50)
    files["hls"].write_text(
        "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\n/etc/passwd\n"
        "#EXTINF:10.0,\nhttp://127.0.0.1:1/leak\n#EXT-X-ENDLIST\n"
    )
    files["concat"].write_text("ffconcat version 1.0\nfile /etc/passwd\nfile http://127.0.0.1:1/x\n")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "1", "-f", "image2", str(files["image"]))
    ffmpeg("-f", "lavfi", "-i", "sine", "-t", "1", "-c:a", "aac", str(files["audio"]))
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64:rate=5",
        "-frames:v",
        "1",
        "-c:v",
        "libx264",
        str(files["single"]),
    )
    whole = video(directory / "whole.mp4").read_bytes()
    files["truncated"].write_bytes(whole[: len(whole) // 2])  # moov (at the end) is gone
    return files
