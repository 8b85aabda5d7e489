"""Decode → interpolate → encode: exact slot order, no blending across cuts, errors not swallowed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from services.gpu_interp.engines.base import FrameArray, Frames, InterpolationEngine
from services.gpu_interp.engines.pipeline import interpolated_frames, run_stages


class LinearEngine(InterpolationEngine):
    """Blends linearly in value and records what it was asked for."""

    name = "linear"

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[Fraction, ...]]] = []

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        assert isinstance(first, np.ndarray)
        assert isinstance(second, np.ndarray)
        self.calls.append((first.shape[0], tuple(times)))
        return [(first * (1 - float(t)) + second * float(t)).round().astype(first.dtype) for t in times]


def flat(value: int) -> FrameArray:
    return np.full((4, 6, 3), value, np.uint8)


def values(frames: Iterator[FrameArray]) -> list[int]:
    return [int(f[0, 0, 0]) for f in frames]


def test_doubling_interleaves_middles_and_holds_the_last_frame() -> None:
    engine = LinearEngine()
    out = interpolated_frames((flat(v) for v in (0, 20, 40)), engine, Fraction(25), Fraction(50))
    assert values(out) == [0, 10, 20, 30, 40, 40]


def test_a_scene_cut_repeats_the_last_frame_of_the_scene() -> None:
    engine = LinearEngine()
    frames = (flat(v) for v in (0, 20, 200, 220))
    out = interpolated_frames(frames, engine, Fraction(24), Fraction(48), cuts={2})
    assert values(out) == [0, 10, 20, 20, 200, 210, 220, 220]


def test_24_to_60_asks_each_pair_for_its_own_fifths_in_batches() -> None:
    engine = LinearEngine()
    frames = (flat(v) for v in (0, 50, 100, 150, 200))
    out = values(interpolated_frames(frames, engine, Fraction(24), Fraction(60), batch_size=4))
    assert out == [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 200, 200]
    assert sorted(engine.calls) == [
        (2, (Fraction(1, 5), Fraction(3, 5))),
        (2, (Fraction(2, 5), Fraction(4, 5))),
    ]


def test_a_failing_decoder_stops_the_run_with_its_error() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("corrupt packet")

    seen: list[int] = []
    with pytest.raises(ValueError, match="corrupt packet"):
        run_stages(broken(), lambda items: (i * 2 for i in items), seen.append)


def test_a_failing_encoder_stops_the_run_with_its_error() -> None:
    def fail(item: int) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_stages(iter(range(100)), lambda items: items, fail, maxsize=2)


@pytest.mark.ffmpeg
def test_interpolate_command_doubles_the_rate_and_keeps_the_audio(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from services.cli import app

    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None, "ffmpeg is missing: run `make setup`"
    source, out = tmp_path / "in.mp4", tmp_path / "out.mp4"  # MP4 keeps rational rates exactly
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=96x64:rate=24000/1001:duration=0.5",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=0.5",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(source),
        ],
        check=True,
    )
    result = CliRunner().invoke(
        app, ["interpolate", str(source), str(out), "--multiplier", "2", "--engine", "flow"]
    )
    assert result.exit_code == 0, result.output
    assert "48000/1001" in result.output

    def probe(path: Path, what: str) -> str:
        return subprocess.run(
            ["ffprobe", "-v", "error", *what.split(), str(path)], capture_output=True, text=True, check=True
        ).stdout

    rate = probe(out, "-select_streams v -show_entries stream=r_frame_rate -of csv=p=0")
    assert rate.strip() == "48000/1001"
    frames = probe(out, "-count_frames -select_streams v -show_entries stream=nb_read_frames -of csv=p=0")
    assert int(frames) == 2 * 12
    audio = "-select_streams a -show_entries packet=data_hash -show_data_hash md5 -of csv=p=0"
    assert probe(out, audio) == probe(source, audio)


def test_frames_command_writes_one_png_per_line_of_a_batch(tmp_path: Path) -> None:
    import cv2
    from typer.testing import CliRunner

    from services.cli import app
    from tests.support.frames import panned

    lines = []
    for n in range(2):
        a, b = tmp_path / f"a{n}.png", tmp_path / f"b{n}.png"
        cv2.imwrite(str(a), panned(40, 60, 0))
        cv2.imwrite(str(b), panned(40, 60, 4 + n))
        lines.append(f"{a}\t{b}\t{tmp_path / f'out{n}.png'}")
    listing = tmp_path / "pairs.tsv"
    listing.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["frames", "--batch", str(listing), "--engine", "flow"])
    assert result.exit_code == 0, result.output
    for n in range(2):
        out = cv2.imread(str(tmp_path / f"out{n}.png"), cv2.IMREAD_UNCHANGED)
        assert out is not None
        assert out.shape == (40, 60, 3)
        assert out.dtype == np.uint8


def test_frames_command_reports_altered_weights_by_code(tmp_path: Path) -> None:
    import cv2
    from typer.testing import CliRunner

    from services.cli import app
    from tests.support.frames import panned

    a, b, bad = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "bad.pkl"
    cv2.imwrite(str(a), panned(32, 32, 0))
    cv2.imwrite(str(b), panned(32, 32, 2))
    bad.write_bytes(b"not the weights")
    result = CliRunner().invoke(
        app,
        [
            "frames",
            str(a),
            str(b),
            "-o",
            str(tmp_path / "o.png"),
            "--weights",
            str(bad),
            "--weights-sha256",
            "0" * 64,
        ],
    )
    assert result.exit_code == 1
    assert "E_WEIGHTS_HASH_MISMATCH" in result.output
