"""A worker writes copies bit-exact and interpolates only the slots that need it, in batches."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from infiniteflow_common.media import LosslessWriter, MediaError, decode_video
from services.gpu_interp.chunk_work import SlotSpec, exact_t, interpolate_chunk
from services.gpu_interp.engines.base import Frames, InterpolationEngine

pytestmark = [pytest.mark.ffmpeg]


class Blend(InterpolationEngine):
    """A stand-in engine: the weighted average, and a record of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[Fraction, ...]]] = []

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        self.calls.append((len(first), tuple(times)))
        return [(first * (1 - float(t)) + second * float(t)).round().astype(first.dtype) for t in times]


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


def test_copies_are_bit_exact_and_pairs_are_batched(tmp_path: Path) -> None:
    source_md5 = _chunk(tmp_path / "in.mkv", 5)
    slots = [SlotSpec(i, Fraction(k, 4)) for i in range(4) for k in range(4)] + [SlotSpec(4, Fraction(0))]
    engine = Blend()
    outcome = interpolate_chunk(
        engine,
        tmp_path / "in.mkv",
        tmp_path / "out.mkv",
        slots,
        expected_frames=5,
        out_rate=Fraction(100),
        batch_size=3,
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


def test_a_chunk_shorter_than_its_plan_is_refused(tmp_path: Path) -> None:
    _chunk(tmp_path / "in.mkv", 3)
    with pytest.raises(MediaError) as error:
        interpolate_chunk(
            Blend(),
            tmp_path / "in.mkv",
            tmp_path / "out.mkv",
            [SlotSpec(0, Fraction(0))],
            expected_frames=4,
            out_rate=Fraction(1),
        )
    assert error.value.code == "E_CHUNK_FRAME_COUNT"


def test_wire_timesteps_become_the_exact_fractions_they_stand_for() -> None:
    assert exact_t(float(Fraction(2, 5))) == Fraction(2, 5)
    assert exact_t(float(Fraction(1001, 2500))) == Fraction(1001, 2500)
