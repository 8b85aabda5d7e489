"""A worker's media I/O: its range of the pinned source in, its encoded chunk out.

Reading (`remote_media`): FFmpeg opens a presigned URL of the probed object version and fetches only
what it needs (the index, then from the keyframe before the chunk's first frame to its last) with HTTP
range requests; `If-Match` on the probed ETag turns an overwritten source into `E_SOURCE_CHANGED`
instead of a mix of two files. Writing: frames go as raw video in NUT through a pipe into the system `ffmpeg`,
which encodes them with the job's `VideoEncoding` into a Matroska chunk (the same encoders ingest
checked the job against). Only loopback HTTP to the object store and our own files are opened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import av
import av.error
import numpy as np
import numpy.typing as npt

from infiniteflow_common.encoding import encoder_args
from infiniteflow_common.errors import InfiniteFlowError
from infiniteflow_common.events import SourceRange, VideoEncoding
from infiniteflow_common.media import MediaError
from infiniteflow_common.remote_media import decode_failure, open_source


class EncodeError(InfiniteFlowError):
    """FFmpeg could not encode the chunk."""

    code = "E_ENCODE_FAILED"
    media_failure = True  # counted in infiniteflow_ffmpeg_failures_total


SEEK_MARGINS_S: tuple[float | None, ...] = (0.0, 1.0, 4.0, 16.0, None)
"""How far before the planned decode start each read seeks, in turn (None: the start of the stream).

Containers with an index (MP4/MOV, Matroska) land on the keyframe itself; those searched by timestamp
(MPEG-TS, FLV, AVI without an index, raw streams) land near it, sometimes just past it when decode
order runs ahead of presentation order. Every landing is verified, never trusted.
"""


class _SeekLandedPastStartError(Exception):
    """The seek put the decoder after the planned decode start: it must seek further back."""


def source_frames(location: str, source: SourceRange, *, timeout_s: float = 60.0) -> Iterator[Any]:
    """The chunk's frames, in order (a frame repeats where the plan repeats it), from `location`.

    Exact by construction (DESIGN.md): the plan names the keyframe a decode must begin at
    (`decode_start_pts`, found by the splitter's full decode). The reader seeks before it, drops what
    the decoder gives until that keyframe comes out, and takes the planned timestamps from there; a
    seek that landed past it is retried further back, then from the start. Without a planned start
    (no timestamps, a v2 plan) it decodes from the start of the stream.
    """
    start = source.decode_start_pts if source.frame_pts is not None else None
    margins = SEEK_MARGINS_S if start is not None else (None,)
    for margin in margins:
        container = open_source(location, source.etag, timeout_s)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            decoded = container.decode(stream)
            if start is not None and margin is not None:
                back = round(Fraction(margin) * Fraction(source.time_base_den, source.time_base_num))
                container.seek(start - back, stream=stream, backward=True, any_frame=False)
            if source.frame_pts is None:
                yield from _pick(decoded, list(source.frame_indices), lambda i, _f: i)
            elif start is None:
                yield from _pick(decoded, list(source.frame_pts), lambda _i, f: f.pts)
            else:
                whole = _from_decode_start(decoded, start, seeked=margin is not None)
                yield from _pick(whole, list(source.frame_pts), lambda _i, f: f.pts)
            return
        except _SeekLandedPastStartError:
            continue
        except av.FFmpegError as exc:
            raise decode_failure(exc) from exc
        finally:
            container.close()
    raise MediaError(  # pragma: no cover - the last margin decodes from the start, which cannot land past it
        f"the source has no frame at the planned decode start {start}", code="E_CHUNK_FRAME_COUNT"
    )


def _from_decode_start(decoded: Iterator[Any], start: int, *, seeked: bool) -> Iterator[Any]:
    """The decoded frames from the one at `start` on; what comes before it is dropped.

    Frames before the start are leftovers of where the seek landed (or the start's own leading frames,
    predicted from a GOP the decode never saw). A frame after the start before the start itself came
    out, or none at all, means the seek landed past it.
    """
    reached = False
    for frame in decoded:
        if frame.pts is None:
            continue
        if not reached:
            if frame.pts < start:
                continue
            if frame.pts > start:
                if seeked:
                    raise _SeekLandedPastStartError
                raise MediaError(
                    f"the source has no frame at the planned decode start {start} (next is {frame.pts}); "
                    "it differs from the probed file",
                    code="E_CHUNK_FRAME_COUNT",
                )
            reached = True
        yield frame
    if not reached and seeked:
        raise _SeekLandedPastStartError  # nothing came out: the seek went past the last keyframe's data


def _pick(decoded: Iterator[Any], wanted: list[int], position: Any) -> Iterator[Any]:
    """The decoded frames whose position is in `wanted` (ascending, repeats allowed), in its order."""
    at = 0
    for index, frame in enumerate(decoded):
        here = position(index, frame)
        if here is None:
            continue
        while at < len(wanted) and wanted[at] == here:
            yield frame
            at += 1
        if at == len(wanted):
            return
        if here > wanted[at]:
            raise MediaError(
                f"the source has no frame at {wanted[at]} (next is {here}); it differs from the probed file",
                code="E_CHUNK_FRAME_COUNT",
            )
    if at < len(wanted):
        raise MediaError(
            f"the source ended {len(wanted) - at} frame(s) before the chunk did", code="E_CHUNK_FRAME_COUNT"
        )


class ChunkEncoder:
    """Encodes frames, in order, at exactly `rate` into a Matroska chunk with the job's encoding.

    A frame sink (`write`, `write_rgb`, `count`): decoded frames pass in their own pixel format, RGB
    arrays are converted back to the source's, and FFmpeg does the final conversion and encode.
    """

    def __init__(
        self,
        output: Path,
        encoding: VideoEncoding,
        *,
        width: int,
        height: int,
        rate: Fraction,
        timeout_s: float,
    ) -> None:
        self.output = output
        self.count = 0
        self.peak_rss_bytes = 0  # FFmpeg's peak resident memory, known once it exited (close)
        self.pix_fmt = encoding.pix_fmt
        self.timeout_s = timeout_s
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - FFmpeg's stderr, closed with the encoder
        command = [
            "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y",
            "-f", "nut", "-i", "pipe:0",
            "-map", "0:v:0", "-fps_mode", "passthrough",
            *encoder_args(encoding, rate),
            "-f", "matroska", "file:" + str(output),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log
        )
        assert self._process.stdin is not None
        self._container: Any = av.open(self._process.stdin, "w", format="nut")
        stream = self._container.add_stream("rawvideo", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
        stream.codec_context.time_base = 1 / rate
        self._stream = stream
        self._time_base = 1 / rate

    def write(self, frame: Any) -> None:
        """Append a decoded `av.VideoFrame` (converted to the source's pixel format if needed)."""
        if frame.format.name != self.pix_fmt:
            frame = frame.reformat(format=self.pix_fmt)
        frame.pts = self.count
        frame.time_base = self._time_base
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (BrokenPipeError, av.FFmpegError) as exc:
            self._raise_failure(exc)
        self.count += 1

    def write_rgb(self, rgb: npt.NDArray[Any]) -> None:
        """Append an (H, W, 3) RGB array (uint8 → rgb24, uint16 → rgb48le)."""
        layout = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
        self.write(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=layout))

    def close(self) -> None:
        """Flush, let FFmpeg finish the file, and check it did."""
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except (BrokenPipeError, av.FFmpegError) as exc:
            self._raise_failure(exc)
        finally:
            self._close_pipe()
        try:
            code = self._wait_measured()
        except subprocess.TimeoutExpired as exc:
            self._process.kill()
            raise EncodeError(
                f"ffmpeg did not finish the chunk within {self.timeout_s:.0f} s", code="E_ENCODE_TIMEOUT"
            ) from exc
        if code != 0:
            self._raise_failure(None)

    def _wait_measured(self) -> int:
        """Wait for FFmpeg to exit (within `timeout_s`), keeping its peak RSS (`peak_rss_bytes`).

        The peak is FFmpeg's own high-water mark (VmHWM), read until it exits: it counts toward the
        worker's memory budget but not toward the worker process's own peak. (The exit's rusage would
        also count the worker's pages the child had between fork and exec.)
        """
        deadline = time.monotonic() + self.timeout_s
        status_file = Path(f"/proc/{self._process.pid}/status")
        while True:
            self._note_peak(status_file)
            pid, status = os.waitpid(self._process.pid, os.WNOHANG)
            if pid:
                self._process.returncode = os.waitstatus_to_exitcode(status)
                return self._process.returncode
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self._process.args, self.timeout_s)
            time.sleep(0.01)

    def _note_peak(self, status_file: Path) -> None:
        with contextlib.suppress(OSError):  # gone: the last reading stands
            found = re.search(r"^VmHWM:\s+(\d+)", status_file.read_text(), re.MULTILINE)
            if found:
                self.peak_rss_bytes = max(self.peak_rss_bytes, int(found.group(1)) * 1024)

    def abort(self) -> None:
        """Stop FFmpeg and drop the partial output."""
        self._close_pipe()
        self._process.kill()
        self._process.wait()
        self._log.close()
        self.output.unlink(missing_ok=True)

    def _close_pipe(self) -> None:
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()

    def _raise_failure(self, cause: BaseException | None) -> None:
        self._close_pipe()
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._log.seek(0)
        said = self._log.read().decode(errors="replace").strip()
        if "No space left on device" in said:
            raise OSError(errno.ENOSPC, "No space left on device (the chunk's encode)")
        raise EncodeError(f"ffmpeg could not encode the chunk: {said[-500:] or cause}") from cause

    def __enter__(self) -> ChunkEncoder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
