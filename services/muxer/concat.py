"""Concatenating encoded chunks by stream copy, each frame restamped to its exact output time.

Every chunk is a closed-GOP run of the job's codec that starts with a keyframe, so the packets of all
chunks in order form one valid stream; nothing is decoded. Each packet's presentation index comes from
its chunk's own timestamps (frame k of a chunk at k / rate, whatever the container rounded them to)
plus the frames of the chunks before it. Output frame k is stamped at `stamps[k]` (k / rate exactly,
or the kept timestamps of variable-rate input); decode timestamps follow decode order, shifted by the
stream's largest reordering delay, so they increase strictly and never pass a presentation time.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from infiniteflow_common.errors import InfiniteFlowError


class ConcatError(InfiniteFlowError):
    """The encoded chunks do not form the planned stream."""

    code = "E_MUX_CHUNKS"
    media_failure = True


def presentation_order(pts: Sequence[int], time_base: Fraction, rate: Fraction) -> list[int]:
    """Each packet's frame index in its chunk (decode order in, presentation index out; pure)."""
    if not pts:
        return []
    first = min(pts)
    return [round((p - first) * time_base * rate) for p in pts]


def reorder_delay(indices: Sequence[int]) -> int:
    """How many frames decode order runs ahead of presentation order at most (B-frames; pure)."""
    return max([0, *(position - index for position, index in enumerate(indices))])


def decode_stamps(stamps: Sequence[int], delay: int, count: int) -> list[int]:
    """Decode timestamps for `count` packets: the presentation stamps shifted back by `delay` frames.

    Before the first frame the first interval is repeated backwards, so they stay strictly increasing.
    """
    step = stamps[1] - stamps[0] if len(stamps) > 1 else 1
    return [stamps[j - delay] if j >= delay else stamps[0] - (delay - j) * step for j in range(count)]


def _packets(path: Path) -> tuple[Any, Any, list[Any]]:
    container = av.open(str(path), "r", options={"protocol_whitelist": "file"})
    stream = container.streams.video[0]
    return container, stream, [p for p in container.demux(stream) if p.size > 0 and p.pts is not None]


def chunk_layout(paths: Sequence[Path], frames: Sequence[int], rate: Fraction) -> tuple[list[list[int]], int]:
    """Every chunk's packets' presentation indices, checked against its planned frame count, and the
    largest reordering delay of them all."""
    layout: list[list[int]] = []
    delay = 0
    for index, (path, expected) in enumerate(zip(paths, frames, strict=True)):
        container, stream, packets = _packets(path)
        try:
            order = presentation_order([p.pts for p in packets], Fraction(stream.time_base), rate)
        finally:
            container.close()
        if sorted(order) != list(range(expected)):
            raise ConcatError(
                f"chunk {index} holds {len(order)} frames at {sorted(set(order))[:3]}…, the plan {expected}"
            )
        delay = max(delay, reorder_delay(order))
        layout.append(order)
    return layout, delay


def concatenate(
    paths: Sequence[Path],
    frames: Sequence[int],
    rate: Fraction,
    output: Path,
    time_base: Fraction,
    stamps: Sequence[int],
) -> None:
    """Write the chunks' packets, in order, to `output` (MP4, video only) with frame k at `stamps[k]`."""
    layout, delay = chunk_layout(paths, frames, rate)
    if sum(frames) != len(stamps):
        raise ConcatError(
            f"the chunks hold {sum(frames)} frames, the plan {len(stamps)}", code="E_MUX_FRAME_COUNT"
        )
    dts = decode_stamps(stamps, delay, len(stamps))
    last = stamps[-1] - stamps[-2] if len(stamps) > 1 else 1
    durations = [b - a for a, b in itertools.pairwise(stamps)] + [last]
    out = av.open(str(output), "w", format="mp4")
    try:
        target: Any = None
        base = 0
        decoded = 0
        for path, order in zip(paths, layout, strict=True):
            container, stream, packets = _packets(path)
            try:
                if target is None:
                    # the chunk's codec parameters as they are: never an encoder looked up by the
                    # decoder's name (PyAV opens AV1 with `libdav1d`, which names no encoder)
                    target = out.add_stream_from_template(stream, opaque=True)
                    target.time_base = time_base
                    if stream.codec_context.name == "hevc":
                        target.codec_context.codec_tag = "hvc1"  # the HEVC tag players expect in MP4
                for packet, position in zip(packets, order, strict=True):
                    packet.stream = target
                    packet.time_base = time_base
                    packet.pts = stamps[base + position]
                    packet.dts = dts[decoded]
                    packet.duration = durations[base + position]
                    out.mux(packet)
                    decoded += 1
            finally:
                container.close()
            base += len(order)
    finally:
        out.close()
