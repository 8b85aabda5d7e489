"""A worker writes copies bit-exact and interpolates only the slots that need it, in batches, as a stream."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from infiniteflow_common.events import OutputSlot
from infiniteflow_common.media import MediaError, decode_video
from infiniteflow_common.timing import Slot, exact_t
from services.gpu_interp.chunk_work import interpolate_chunk, wanted_times
from services.gpu_interp.engines.base import Frames, InterpolationEngine
from tests.support.clips import LosslessWriter


class Blend(InterpolationEngine):
    """A stand-in engine: the weighted average, and a record of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[Fraction, ...]]] = []

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        self.calls.append((len(first), tuple(times)))
        return [(first * (1 - float(t)) + second * float(t)).round().astype(first.dtype) for t in times]


class Recorder:
    """An in-memory frame sink: what was written, in order, and whether it was a copy."""

    def __init__(self) -> None:
        self.count = 0
        self.written: list[tuple[str, npt.NDArray[Any]]] = []

    def write(self, frame: Any) -> None:
        self.written.append(("copy", frame.to_ndarray(format="rgb24")))
        self.count += 1

    def write_rgb(self, rgb: npt.NDArray[Any]) -> None:
        self.written.append(("made", np.asarray(rgb)))
        self.count += 1


def _slot(offset: int, t: Fraction | float) -> Slot:
    return Slot.from_wire(OutputSlot(source_offset=offset, t=float(t)))


def _chunk(path: Path, count: int, pix_fmt: str = "yuv444p") -> list[bytes]:
    rng = np.random.default_rng(3)
    with LosslessWriter(path, width=33, height=17, pix_fmt=pix_fmt, rate=Fraction(25)) as writer:
        for _ in range(count):
            writer.write_rgb(rng.integers(0, 256, (17, 33, 3), dtype=np.uint8))
    return _md5s(path)


def _md5s(path: Path) -> list[bytes]:
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "framemd5", "-"], capture_output=True, check=True
    )
    return [line.rsplit(b",", 1)[1].strip() for line in out.stdout.splitlines() if not line.startswith(b"#")]


def _flat_frames(count: int, step: int = 10) -> list[Any]:
    """Synthetic decoded frames, frame i a flat grey of step·i (rgb24, no FFmpeg needed)."""
    return [
        av.VideoFrame.from_ndarray(np.full((8, 16, 3), step * i, np.uint8), format="rgb24")
        for i in range(count)
    ]


@pytest.mark.ffmpeg
def test_copies_are_bit_exact_and_pairs_are_batched(tmp_path: Path) -> None:
    source_md5 = _chunk(tmp_path / "in.mkv", 5)
    slots = [_slot(i, Fraction(k, 4)) for i in range(4) for k in range(4)] + [_slot(4, 0)]
    engine = Blend()
    with LosslessWriter(
        tmp_path / "out.mkv", width=33, height=17, pix_fmt="yuv444p", rate=Fraction(100)
    ) as sink:
        outcome = interpolate_chunk(
            engine, decode_video(tmp_path / "in.mkv"), sink, slots, expected_frames=5, batch_size=3
        )
    assert outcome.frames_out == len(slots)
    assert outcome.quality is None, "the self-check is off unless it has a budget"
    out_md5 = _md5s(tmp_path / "out.mkv")
    assert [out_md5[i * 4] for i in range(4)] + [out_md5[-1]] == source_md5
    assert engine.calls == [
        (3, (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))),
        (1, (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))),
    ]
    assert len(list(decode_video(tmp_path / "out.mkv"))) == 17


@pytest.mark.ffmpeg
def test_a_chunk_shorter_than_its_plan_is_refused(tmp_path: Path) -> None:
    _chunk(tmp_path / "in.mkv", 3)
    with pytest.raises(MediaError) as error:
        interpolate_chunk(
            Blend(), decode_video(tmp_path / "in.mkv"), Recorder(), [_slot(0, 0)], expected_frames=4
        )
    assert error.value.code == "E_CHUNK_FRAME_COUNT"


def test_a_chunk_longer_than_its_plan_is_refused() -> None:
    with pytest.raises(MediaError) as error:
        interpolate_chunk(Blend(), iter(_flat_frames(4)), Recorder(), [_slot(0, 0)], expected_frames=3)
    assert error.value.code == "E_CHUNK_FRAME_COUNT"


def test_slots_outside_the_chunk_or_without_a_right_neighbour_are_refused() -> None:
    for bad in ([_slot(3, 0)], [_slot(2, 0.5)]):
        with pytest.raises(MediaError) as error:
            wanted_times(bad, 3)
        assert error.value.code == "E_CHUNK_PLAN"


def test_wanted_times_are_the_distinct_nonzero_timesteps_of_each_pair() -> None:
    slots = [
        _slot(0, 0),
        _slot(0, 0.5),
        _slot(1, 0),
        _slot(1, 0.25),
        _slot(1, 0.75),
        _slot(2, 0),
        _slot(2, 0),
    ]
    assert wanted_times(slots, 3) == {0: (Fraction(1, 2),), 1: (Fraction(1, 4), Fraction(3, 4))}


def test_the_output_is_in_slot_order_with_copies_from_the_source_and_blends_in_between() -> None:
    frames = _flat_frames(4)
    slots = [_slot(0, 0), _slot(0, 0.5), _slot(1, 0), _slot(1, 0.5), _slot(2, 0), _slot(3, 0), _slot(3, 0)]
    sink = Recorder()
    outcome = interpolate_chunk(Blend(), iter(frames), sink, slots, expected_frames=4, batch_size=2)
    assert outcome.frames_out == sink.count == len(slots)
    assert [kind for kind, _ in sink.written] == ["copy", "made", "copy", "made", "copy", "copy", "copy"]
    assert [int(image[0, 0, 0]) for _, image in sink.written] == [0, 5, 10, 15, 20, 30, 30]


def test_pairs_wanting_other_timesteps_go_in_separate_batches() -> None:
    slots = [_slot(0, 0), _slot(0, 0.5), _slot(1, 0), _slot(1, 0.25), _slot(1, 0.75), _slot(2, 0)]
    slots += [_slot(2, 0.5), _slot(3, 0)]
    engine = Blend()
    interpolate_chunk(engine, iter(_flat_frames(4)), Recorder(), slots, expected_frames=4, batch_size=8)
    assert engine.calls == [
        (1, (Fraction(1, 2),)),
        (1, (Fraction(1, 4), Fraction(3, 4))),
        (1, (Fraction(1, 2),)),
    ]


def test_on_batch_reports_progress_and_can_abort_the_chunk() -> None:
    slots = [_slot(i, k / 2) for i in range(6) for k in range(2)] + [_slot(6, 0)]
    seen: list[tuple[int, int]] = []
    interpolate_chunk(
        Blend(), iter(_flat_frames(7)), Recorder(), slots, expected_frames=7, batch_size=4,
        on_batch=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert seen == [(4, 6), (6, 6)]

    class CancelledError(Exception):
        pass

    def cancel(done: int, total: int) -> None:
        raise CancelledError

    with pytest.raises(CancelledError):
        interpolate_chunk(
            Blend(),
            iter(_flat_frames(7)),
            Recorder(),
            slots,
            expected_frames=7,
            batch_size=2,
            on_batch=cancel,
        )


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_the_chunk_streams_and_holds_only_about_a_batch_of_frames(batch_size: int) -> None:
    count, multiplier = 60, 4
    slots = [_slot(i, Fraction(k, multiplier)) for i in range(count - 1) for k in range(multiplier)]
    slots += [_slot(count - 1, 0)] * multiplier
    sink = Recorder()
    # output index → the source frame it belongs to: a source frame is released once its slots are out
    owner = [slot.source_offset for slot in slots]
    held: list[int] = []
    written_when: list[int] = []

    def frames() -> Iterator[Any]:
        for index, frame in enumerate(_flat_frames(count, step=4)):
            done = len({owner[k] for k in range(sink.count)}) if sink.count else 0
            held.append(index - done)  # decoded earlier and not yet fully written
            written_when.append(sink.count)
            yield frame

    outcome = interpolate_chunk(Blend(), frames(), sink, slots, expected_frames=count, batch_size=batch_size)
    assert outcome.frames_out == len(slots)
    assert max(held) + 1 <= batch_size + 2, f"held up to {max(held) + 1} frames with batches of {batch_size}"
    assert written_when[count // 2] >= multiplier * (count // 2 - batch_size - 1), (
        "halfway through decoding, the frames before the current batch are already in the sink"
    )
    assert [int(image[0, 0, 0]) for _, image in sink.written[::multiplier]] == [4 * i for i in range(count)]


def test_wire_timesteps_become_the_exact_fractions_they_stand_for() -> None:
    assert exact_t(float(Fraction(2, 5))) == Fraction(2, 5)
    assert exact_t(float(Fraction(1001, 2500))) == Fraction(1001, 2500)
