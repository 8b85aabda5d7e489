"""Small test clips made with ffmpeg, good and hostile, for the ingest tests."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

_MOV_CONTAINERS = (b"moov", b"trak", b"mdia", b"minf", b"dinf")


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
        "external_ref": directory / "external_ref.mp4",
        "many_streams": directory / "many_streams.mp4",
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
    mov = directory / "self_contained.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10", "-t", "1", "-c:v", "mpeg4", str(mov))
    files["external_ref"].write_bytes(with_external_reference(mov.read_bytes(), "/etc/passwd"))
    # one video and 300 audio streams (the limit is 32 by default)
    audio_maps = [arg for _ in range(300) for arg in ("-map", "1:a")]
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono",
        "-t", "0.5", "-map", "0:v", *audio_maps, "-c:v", "mpeg4", "-c:a", "pcm_s16le", "-f", "matroska",
        str(files["many_streams"]),
    )  # fmt: skip
    return files


def with_external_reference(mov: bytes, target: str) -> bytes:
    """The MOV with its video's data reference replaced by a Mac alias to `target` (an external file).

    QuickTime reference movies keep their media elsewhere; a reader that follows such a reference
    can be made to read any local file.
    """

    def dref_chain(start: int, end: int, trail: list[int]) -> list[int] | None:
        at = start
        while at + 8 <= end:
            size, kind = struct.unpack(">I4s", mov[at : at + 8])
            if kind == b"dref":
                return [*trail, at]
            if kind in _MOV_CONTAINERS and (found := dref_chain(at + 8, at + size, [*trail, at])):
                return found
            at += size
        return None

    chain = dref_chain(0, len(mov), [])
    assert chain, "no dref atom in the MOV"
    entry_at = chain[-1] + 16  # size, 'dref', version+flags, entry count
    (old_size,) = struct.unpack(">I", mov[entry_at : entry_at + 4])
    raw = target.encode()
    alias = (
        bytes(10) + bytes([12]) + b"Macintosh HD".ljust(27, b"\0") + bytes(12)
        + bytes([min(len(raw), 63)]) + raw[-63:].ljust(63, b"\0") + bytes(16)
        + struct.pack(">hh", -1, -1) + bytes(16)
        + struct.pack(">hH", 2, len(raw)) + raw + (b"\0" if len(raw) % 2 else b"")  # absolute path
        + struct.pack(">hH", -1, 0)
    )  # fmt: skip
    entry = struct.pack(">I4sI", 12 + len(alias), b"alis", 0) + alias
    patched = bytearray(mov[:entry_at] + entry + mov[entry_at + old_size :])
    for at in chain:  # every enclosing atom grows by the same amount (moov is last: no offset moves)
        (size,) = struct.unpack(">I", patched[at : at + 4])
        patched[at : at + 4] = struct.pack(">I", size + len(entry) - old_size)
    return bytes(patched)
