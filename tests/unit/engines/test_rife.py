"""The `rife` engine: any frame size, batches, timesteps, and motion better than blending."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from infiniteflow_common.errors import InfiniteFlowError
from tests.support.frames import mse, panned, square_scene


@pytest.mark.parametrize(("height", "width"), [(37, 53), (64, 64), (33, 130)])
def test_frames_of_any_size_come_back_at_their_own_size(rife_engine: Any, height: int, width: int) -> None:
    frame = panned(height, width, 0)
    out = rife_engine.interpolate(frame, frame)
    assert out.shape == frame.shape
    assert out.dtype == np.uint8
    # Padding to a multiple of 32 is cropped away: between two equal frames nothing moves.
    assert np.abs(out.astype(int) - frame).max() <= 2


def test_a_moving_square_is_drawn_halfway_not_blended(rife_engine: Any) -> None:
    first, second, truth = (square_scene(64, 96, shift) for shift in (0, 8, 4))
    out = rife_engine.interpolate(first, second)
    blend = ((first.astype(np.float64) + second) / 2).round()
    assert mse(out, truth) < mse(blend, truth) / 4


def test_a_batch_gives_the_same_frames_as_one_pair_at_a_time(rife_engine: Any) -> None:
    firsts = np.stack([panned(40, 56, 0), panned(40, 56, 1, 1)])
    seconds = np.stack([panned(40, 56, 4), panned(40, 56, -3, 2)])
    batch = rife_engine.interpolate(firsts, seconds)
    singles = np.stack([rife_engine.interpolate(f, s) for f, s in zip(firsts, seconds, strict=True)])
    assert np.abs(batch.astype(int) - singles).max() <= 1


def test_times_zero_and_one_are_the_input_frames(rife_engine: Any) -> None:
    first, second = panned(32, 32, 0), panned(32, 32, 4)
    at0, at1 = rife_engine.interpolate_times(first, second, [0, 1])
    assert np.array_equal(at0, first)
    assert np.array_equal(at1, second)


@pytest.mark.parametrize("t", [Fraction(1, 4), Fraction(3, 4), Fraction(2, 5)])
def test_other_times_follow_the_motion(rife_engine: Any, t: Fraction) -> None:
    first, second = panned(48, 64, 0), panned(48, 64, 8)
    truth = panned(48, 64, 8 * float(t))
    (out,) = rife_engine.interpolate_times(first, second, [t])
    middle = panned(48, 64, 4)
    assert mse(out, truth) < mse(middle, truth) / 2


def test_sixteen_bit_frames_keep_their_depth(rife_engine: Any) -> None:
    first8, second8 = panned(32, 48, 0), panned(32, 48, 4)
    out = rife_engine.interpolate(first8.astype(np.uint16) * 257, second8.astype(np.uint16) * 257)
    assert out.dtype == np.uint16
    assert np.abs(out / 257 - rife_engine.interpolate(first8, second8)).max() <= 1


def test_mismatched_pairs_are_refused(rife_engine: Any) -> None:
    with pytest.raises(InfiniteFlowError) as err:
        rife_engine.interpolate(panned(32, 32, 0), panned(32, 40, 0))
    assert err.value.code == "E_INTERP_BAD_INPUT"


def test_flip_averaging_stays_close_to_the_plain_pass() -> None:
    from services.gpu_interp.engines.rife import RifeEngine, RifeSettings

    first, second, truth = (square_scene(64, 96, shift) for shift in (0, 8, 4))
    fast = RifeEngine(RifeSettings(device="cpu", precision="fp32")).interpolate(first, second)
    tta = RifeEngine(RifeSettings(device="cpu", precision="fp32", quality="tta")).interpolate(first, second)
    assert mse(tta, truth) < 2 * mse(fast, truth) + 1.0


def test_bf16_is_chosen_only_where_the_cpu_has_it() -> None:
    from services.gpu_interp.engines.rife import cpu_has_native_bf16

    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
        text = handle.read()
    if "avx512_bf16" in text or "amx_bf16" in text:
        assert cpu_has_native_bf16()
    else:
        assert not cpu_has_native_bf16()


def test_the_resolution_picks_the_flow_scale() -> None:
    from services.gpu_interp.engines.rife import auto_scale

    assert auto_scale(1080, 1920) == 1.0
    assert auto_scale(2160, 3840) == 0.5
    assert auto_scale(2160, 3840, "cpu") == 0.25, "a CPU worker keeps 4K chunks inside its poll interval"
    assert auto_scale(1080, 1920, "cpu") == 1.0


def test_a_4k_pair_works_on_a_cpu_without_tuning_and_memory_settings_can_be_lowered_and_restored() -> None:
    import time

    from services.gpu_interp.engines.rife import RifeEngine, RifeSettings

    engine = RifeEngine(RifeSettings(device="cpu"))
    assert engine.memory_scale(2160, 3840) == 0.25
    first, second, truth = (panned(2160, 3840, dx) for dx in (0, 16, 8))
    started = time.perf_counter()
    out = engine.interpolate(first, second)
    assert time.perf_counter() - started < 60
    assert out.shape == (2160, 3840, 3)
    assert mse(out, truth) < mse(first, truth) / 4
    engine.set_memory(0.125, 1)
    assert (engine.memory_scale(2160, 3840), engine.settings.batch_size) == (0.125, 1)
    engine.set_memory(None, None)
    assert (engine.settings.scale, engine.settings.batch_size) == (None, 4), "back to the configured settings"


@pytest.mark.gpu
def test_on_cuda_fp16_matches_cpu_fp32() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from services.gpu_interp.engines.rife import RifeEngine, RifeSettings

    first, second = panned(96, 160, 0), panned(96, 160, 6)
    gpu = RifeEngine(RifeSettings(device="cuda", precision="fp16")).interpolate(first, second)
    cpu = RifeEngine(RifeSettings(device="cpu", precision="fp32")).interpolate(first, second)
    assert mse(gpu, cpu) < 1.0


def test_tensor_frames_give_the_same_picture_as_arrays(rife_engine: Any) -> None:
    import torch

    first, second = panned(32, 48, 0), panned(32, 48, 4)
    as_array = rife_engine.interpolate(first, second)
    to_tensor = lambda f: torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    as_tensor = rife_engine.interpolate(to_tensor(first), to_tensor(second))
    back = (as_tensor[0].permute(1, 2, 0) * 255).round().numpy()
    assert np.abs(back - as_array).max() <= 1


def _psnr(a: Any, b: Any) -> float:
    return float(10 * np.log10(255.0**2 / max(mse(a, b), 1e-12)))


def test_with_a_tile_size_a_pair_runs_tile_by_tile_close_to_the_whole_frame(
    rife_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = panned(192, 320, 0), panned(192, 320, 6)
    whole = rife_engine.interpolate(first, second)
    sizes: list[tuple[int, int]] = []
    run = rife_engine._whole_times

    def spy(a: Any, b: Any, times: Any) -> Any:
        sizes.append(a.shape[1:3])
        return run(a, b, times)

    monkeypatch.setattr(rife_engine, "_whole_times", spy)
    rife_engine.set_memory(None, None, 128)
    try:
        assert rife_engine.settings.tile == 128
        tiled = rife_engine.interpolate(np.stack([first, first]), np.stack([second, second]))
    finally:
        rife_engine.set_memory(None, None)
    assert rife_engine.settings.tile is None, "back to whole frames"
    assert len(sizes) == 2 * 3 * 2, "each of the two pairs in 3 × 2 tiles"
    assert all(h < 192 and w < 320 for h, w in sizes)
    assert tiled.shape == (2, 192, 320, 3)
    assert _psnr(tiled[0], whole) > 35
    assert np.array_equal(tiled[0], tiled[1])


def test_tiles_are_flow_estimated_at_the_whole_frames_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.gpu_interp.engines import rife

    monkeypatch.setattr(rife, "auto_scale", lambda h, w, device="cuda": 0.5 if h * w >= 192 * 320 else 1.0)
    engine = rife.RifeEngine(rife.RifeSettings(device="cpu", precision="fp32"))
    scales: list[float] = []
    estimate = engine._estimate

    def spy(a: Any, b: Any, scale: float) -> Any:
        scales.append(scale)
        return estimate(a, b, scale)

    monkeypatch.setattr(engine, "_estimate", spy)
    engine.set_memory(None, 1, 128)
    engine.interpolate(panned(192, 320, 0), panned(192, 320, 4))
    assert scales
    assert set(scales) == {0.5}
    assert engine.settings.scale is None, "the pinned scale does not outlive the call"
