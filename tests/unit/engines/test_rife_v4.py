"""The RIFE 4.25-class model: our network on the published weights, every timestep native."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from tests.support.frames import mse, panned, square_scene


def test_the_network_matches_the_published_weights_exactly() -> None:
    from services.gpu_interp.engines import weights
    from services.gpu_interp.engines.ifnet_v4 import WIDTHS, IFNetV4, remap_published_keys

    state = weights.load_state_dict(weights.resolve(package=weights.V425_PACKAGE))
    net = IFNetV4()
    net.load_state_dict(remap_published_keys(state), strict=True)  # every tensor used, none missing
    assert [level.down1.out_channels for level in net.levels] == list(WIDTHS) == [192, 128, 96, 64, 32]
    assert net.encode.cnn3.out_channels == 4
    unused = sum(v.numel() for k, v in state.items() if k.startswith(("teacher.", "caltime.")))
    assert sum(p.numel() for p in net.parameters()) + unused == sum(v.numel() for v in state.values())


@pytest.mark.parametrize(("height", "width"), [(37, 53), (64, 64), (40, 130)])
def test_a_generated_pair_comes_back_at_its_size_finite_and_moving(
    v4_engine: Any, height: int, width: int
) -> None:
    first, second = panned(height, width, 0), panned(height, width, 6)
    out = v4_engine.interpolate(first, second)
    assert out.shape == first.shape
    assert out.dtype == np.uint8
    truth = panned(height, width, 3)
    assert mse(out, truth) < mse(((first.astype(np.float64) + second) / 2).round(), truth) / 4


def test_the_network_at_t_zero_and_one_gives_back_the_inputs(v4_engine: Any) -> None:
    first, second = panned(48, 64, 0), panned(48, 64, 8)
    a, b = v4_engine._to_tensor(first[None]), v4_engine._to_tensor(second[None])
    # frames_at runs the network itself at t = 0 and 1 (interpolate_times would copy the inputs)
    at0, at1 = (v4_engine._from_tensor(x, first[None])[0] for x in v4_engine.frames_at(a, b, [0, 1]))
    apart = mse(first, second)
    assert mse(at0, first) < apart / 50
    assert mse(at1, second) < apart / 50


def test_the_frame_moves_monotonically_with_the_timestep(v4_engine: Any) -> None:
    first, second = panned(48, 64, 0), panned(48, 64, 8)
    times = [Fraction(k, 8) for k in range(1, 8)]
    outs = v4_engine.interpolate_times(first, second, times)
    to_first = [mse(out, first) for out in outs]
    to_second = [mse(out, second) for out in outs]
    assert to_first == sorted(to_first)
    assert to_second == sorted(to_second, reverse=True)
    for t, out in zip(times, outs, strict=True):
        shifts = [mse(out, panned(48, 64, s)) for s in range(9)]
        assert int(np.argmin(shifts)) == 8 * t, f"t={t} looks like a shift of {np.argmin(shifts)} px"


def test_every_timestep_is_one_native_pass_not_a_bisection(v4_engine: Any) -> None:
    from services.gpu_interp.engines.models import MODELS

    calls: list[float] = []
    original = v4_engine._estimate_net

    def counting(a: Any, b: Any, t: Any, shrinks: Any) -> Any:
        calls.append(float(t.flatten()[0]))
        return original(a, b, t, shrinks)

    v4_engine._estimate_net = counting
    try:
        v4_engine.interpolate_times(panned(32, 32, 0), panned(32, 32, 4), [Fraction(1, 8), Fraction(2, 5)])
    finally:
        v4_engine._estimate_net = original
    assert calls == pytest.approx([0.125, 0.4])
    assert MODELS["v4.25"].native_timesteps
    assert not MODELS["hdv3"].native_timesteps


def test_a_moving_square_is_drawn_halfway_not_blended(v4_engine: Any) -> None:
    first, second, truth = (square_scene(64, 96, shift) for shift in (0, 8, 4))
    out = v4_engine.interpolate(first, second)
    blend = ((first.astype(np.float64) + second) / 2).round()
    assert mse(out, truth) < mse(blend, truth) / 4


def test_a_batch_gives_the_same_frames_as_one_pair_at_a_time(v4_engine: Any) -> None:
    firsts = np.stack([panned(40, 56, 0), panned(40, 56, 1, 1)])
    seconds = np.stack([panned(40, 56, 4), panned(40, 56, -3, 2)])
    batch = v4_engine.interpolate(firsts, seconds, [Fraction(1, 3), Fraction(1, 2)])
    singles = np.stack(
        [
            v4_engine.interpolate(f, s, t)
            for f, s, t in zip(firsts, seconds, [Fraction(1, 3), Fraction(1, 2)], strict=True)
        ]
    )
    assert np.abs(batch.astype(int) - singles).max() <= 1


def test_tta_and_best_average_transformed_passes_and_keep_the_size() -> None:
    from services.gpu_interp.engines.models import build_model
    from services.gpu_interp.engines.rife import RifeSettings

    first, second = panned(36, 44, 0), panned(36, 44, 6)
    for quality in ("tta", "best"):
        engine = build_model(
            "v4.25", RifeSettings(device="cpu", precision="fp32", scale=1.0, quality=quality)
        )
        out = engine.interpolate(first, second, 0.25)
        assert out.shape == first.shape
        assert mse(out, panned(36, 44, 1.5)) < mse(out, panned(36, 44, 3))


def test_sixteen_bit_frames_keep_their_depth(v4_engine: Any) -> None:
    first8, second8 = panned(32, 48, 0), panned(32, 48, 4)
    out = v4_engine.interpolate(first8.astype(np.uint16) * 257, second8.astype(np.uint16) * 257)
    assert out.dtype == np.uint16
    assert np.abs(out / 257 - v4_engine.interpolate(first8, second8)).max() <= 1


@pytest.mark.gpu
def test_on_cuda_fp16_matches_cpu_fp32() -> None:
    import torch

    from services.gpu_interp.engines.models import build_model
    from services.gpu_interp.engines.rife import RifeSettings

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    first, second = panned(96, 128, 0), panned(96, 128, 6)
    cpu = build_model("v4.25", RifeSettings(device="cpu", precision="fp32")).interpolate(first, second)
    gpu = build_model("v4.25", RifeSettings(device="cuda", precision="fp16")).interpolate(first, second)
    assert mse(cpu, gpu) < 1.0


def test_with_a_tile_size_a_pair_runs_tile_by_tile_close_to_the_whole_frame(v4_engine: Any) -> None:
    first, second = panned(192, 320, 0), panned(192, 320, 6)
    whole = v4_engine.interpolate(first, second)
    v4_engine.set_memory(None, None, 128)
    try:
        tiled = v4_engine.interpolate(first, second)
    finally:
        v4_engine.set_memory(None, None)
    assert v4_engine.settings.tile is None
    assert tiled.shape == whole.shape
    assert 10 * np.log10(255.0**2 / max(mse(tiled, whole), 1e-12)) > 35
