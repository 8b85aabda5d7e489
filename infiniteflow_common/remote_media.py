"""Reading the pinned source over a presigned URL, as the splitter and the workers do.

FFmpeg opens a presigned GET of the probed object version and fetches what it needs with HTTP range
requests (the index, then the frames in order); `If-Match` on the probed ETag turns an overwritten
source into `E_SOURCE_CHANGED` instead of a mix of two files. Only HTTP(S) over TCP/TLS is allowed
(the store's URL); a local path is opened with the file protocol alone. Nothing is downloaded first,
so a long upload's first frames are decoded at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import av.error

from infiniteflow_common.errors import InfiniteFlowError, TransientError
from infiniteflow_common.media import MediaError
from infiniteflow_common.storage import ObjectUnavailableError

REMOTE_PROTOCOLS = "http,https,tcp,tls"

Source = Path | str
"""A local file, or a presigned URL of the source object."""


def is_remote(source: Source) -> bool:
    """Whether `source` is a URL (else a local file)."""
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def open_source(source: Source, etag: str | None = None, timeout_s: float = 60.0) -> Any:
    """Open `source` for reading with PyAV (a stalled HTTP read fails after `timeout_s`)."""
    if is_remote(source):
        options = {
            "protocol_whitelist": REMOTE_PROTOCOLS,
            "rw_timeout": str(int(timeout_s * 1_000_000)),
            "reconnect": "1",
        }
        if etag:
            options["headers"] = f'If-Match: "{etag}"\r\n'
    else:
        options = {"protocol_whitelist": "file"}
    try:
        return av.open(str(source), "r", options=options)
    except av.FFmpegError as exc:
        raise http_failure(exc) or MediaError(
            f"cannot open the source: {exc}", code="E_MEDIA_UNREADABLE"
        ) from exc


def decode_source(source: Source, etag: str | None = None, timeout_s: float = 60.0) -> Iterator[Any]:
    """Every frame of the source's first video stream, in presentation order (no auto-rotation)."""
    container = open_source(source, etag, timeout_s)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield from container.decode(stream)
    except av.FFmpegError as exc:
        raise decode_failure(exc) from exc
    finally:
        container.close()


def decode_failure(exc: av.FFmpegError) -> InfiniteFlowError:
    """What an error while decoding the source means: a ranged read after the open can find the
    object deleted or replaced meanwhile (its HTTP failure), else the data is broken."""
    return http_failure(exc) or MediaError(f"decoding the source failed: {exc}", code="E_MEDIA_CORRUPT")


def ffprobe_input(source: Source, etag: str | None = None) -> list[str]:
    """ffprobe's arguments that open `source` as `open_source` does (protocols, `If-Match`)."""
    if not is_remote(source):
        return ["-protocol_whitelist", "file", "file:" + str(source)]
    headers = ["-headers", f'If-Match: "{etag}"\r\n'] if etag else []
    return ["-protocol_whitelist", REMOTE_PROTOCOLS, *headers, str(source)]


def http_failure(exc: av.FFmpegError) -> InfiniteFlowError | None:
    """What an HTTP error reading the source means (when opening it or in a later ranged read)."""
    if isinstance(exc, ConnectionError | TimeoutError | av.error.HTTPTooManyRequestsError):
        # the store restarting, a network blip, throttling: the read is retried with backoff
        return TransientError(f"the object store could not serve the source just now: {exc}")
    if isinstance(exc, av.error.HTTPNotFoundError):
        return ObjectUnavailableError(
            "the source object was deleted before the job finished", code="E_SOURCE_GONE"
        )
    if isinstance(exc, av.error.HTTPForbiddenError):
        return ObjectUnavailableError(
            "the pipeline may no longer read the source object", code="E_SOURCE_FORBIDDEN"
        )
    if isinstance(exc, av.error.HTTPClientError):  # 412: the object is not the probed one any more
        return ObjectUnavailableError(
            f"the source object changed after it was probed ({exc}); upload it again to process the new file",
            code="E_SOURCE_CHANGED",
        )
    if isinstance(exc, av.error.HTTPServerError):
        return TransientError(f"the object store failed a read of the source: {exc}")
    return None
