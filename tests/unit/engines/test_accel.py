"""Backends of the rife network: OpenVINO gives eager's frames, and compiled artifacts outlive a process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from infiniteflow_common.errors import InfiniteFlowError
from services.gpu_interp.bench import psnr
from services.gpu_interp.engines import accel, rife
from services.gpu_interp.engines.rife import RifeEngine, RifeSettings
from tests.support.frames import mse, panned, square_scene

CPU = torch.device("cpu")


class TwoConvs(nn.Module):
    """A small stand-in network with two inputs and two outputs, like `Estimator`."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Conv2d(6, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.a(torch.cat((x, y), 1)))
        return self.b(h), h.mean(1, keepdim=True)


def test_openvino_draws_the_same_frames_as_eager_torch(rife_engine: Any, tmp_path: Path) -> None:
    engine = RifeEngine(
        RifeSettings(device="cpu", precision="fp32", scale=1.0, backend="openvino", cache_dir=tmp_path)
    )
    assert engine.backend == "openvino"
    first, second, truth = (square_scene(64, 96, shift) for shift in (0, 8, 4))
    ours, eager = engine.interpolate(first, second), rife_engine.interpolate(first, second)
    assert psnr(ours, eager) > 50  # summation order only: a few 8-bit levels at most, on a few pixels
    assert np.abs(ours.astype(int) - eager).max() <= 3
    assert mse(ours, truth) < mse(((first.astype(np.float64) + second) / 2).round(), truth) / 4


def test_openvino_batches_reuse_the_one_pair_model(tmp_path: Path) -> None:
    engine = RifeEngine(RifeSettings(device="cpu", precision="fp32", backend="openvino", cache_dir=tmp_path))
    firsts = np.stack([panned(40, 56, 0), panned(40, 56, 1, 1), panned(40, 56, 2)])
    seconds = np.stack([panned(40, 56, 4), panned(40, 56, -3, 2), panned(40, 56, 5, 1)])
    batch = engine.interpolate(firsts, seconds)
    singles = np.stack([engine.interpolate(f, s) for f, s in zip(firsts, seconds, strict=True)])
    assert np.array_equal(batch, singles)
    (runner,) = engine._runners.values()
    assert isinstance(runner, accel.OpenVinoRunner)
    assert runner.compiles == 1


def test_uncompiled_calls_convert_nothing_and_draw_eagers_frames(rife_engine: Any, tmp_path: Path) -> None:
    """`model=auto`'s check runs in `uncompiled()`: a window or frame size the chunk never uses
    must not cost a conversion (about a minute per shape on 2 cores)."""
    engine = RifeEngine(
        RifeSettings(device="cpu", precision="fp32", scale=1.0, backend="openvino", cache_dir=tmp_path)
    )
    first, second = square_scene(64, 96, 0), square_scene(64, 96, 8)
    with engine.uncompiled():
        ours = engine.interpolate(first, second)
    assert engine._runners == {}, "nothing traced, converted or compiled"
    assert not list(tmp_path.rglob("*.xml"))
    assert np.array_equal(ours, rife_engine.interpolate(first, second))
    engine.interpolate(first, second)
    assert len(engine._runners) == 1, "outside the block the backend is back"


def test_a_second_process_loads_the_converted_model_instead_of_converting(tmp_path: Path) -> None:
    x, y = torch.rand(1, 3, 16, 24), torch.rand(1, 3, 16, 24)
    first = accel.OpenVinoRunner(TwoConvs(seed=1), tmp_path)
    expected = first(x, y)
    assert first.compiles == 1
    assert list((tmp_path / "openvino").glob("*.xml")), "the converted model is kept on disk"
    again = accel.OpenVinoRunner(TwoConvs(seed=1), tmp_path)  # what a restarted worker builds
    for got, want in zip(again(x, y), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    assert again.compiles == 0
    with torch.no_grad():
        eager = TwoConvs(seed=1)(x, y)
    for got, want in zip(expected, eager, strict=True):
        assert torch.allclose(got, want, atol=1e-4)


def test_other_weights_or_another_shape_never_reuse_a_cached_model(tmp_path: Path) -> None:
    x, y = torch.rand(1, 3, 16, 24), torch.rand(1, 3, 16, 24)
    accel.OpenVinoRunner(TwoConvs(seed=1), tmp_path)(x, y)
    other = accel.OpenVinoRunner(TwoConvs(seed=2), tmp_path)
    out = other(x, y)
    assert other.compiles == 1
    with torch.no_grad():
        assert torch.allclose(out[0], TwoConvs(seed=2)(x, y)[0], atol=1e-4)
    other(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    assert other.compiles == 2
    assert len(list((tmp_path / "openvino").glob("*.xml"))) == 3


def test_the_compile_cache_setting_points_inductor_at_a_kept_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch._inductor.config as inductor_config

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    chosen = accel.configure_compile_cache(tmp_path / "compile")
    assert chosen == (tmp_path / "compile").resolve()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(chosen / "inductor")
    assert inductor_config.fx_graph_cache
    assert chosen.is_dir()
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    assert accel.configure_compile_cache(None) is None
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ


def worker_engine_asking_for_openvino(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, native_bf16: bool
) -> RifeEngine:
    """The rife engine a CPU worker configured with RIFE_BACKEND=openvino builds, on either kind of CPU."""
    from services.gpu_interp.config import WorkerSettings
    from services.gpu_interp.engine_registry import EngineCache

    monkeypatch.setenv("RIFE_BACKEND", "openvino")
    monkeypatch.setenv("COMPILE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setattr(rife, "cpu_has_native_bf16", lambda: native_bf16)
    engine = EngineCache(WorkerSettings()).get("rife", "fast")
    assert isinstance(engine, RifeEngine)
    frame = panned(32, 48, 0)
    assert np.abs(engine.interpolate(frame, frame).astype(int) - frame).max() <= 2
    return engine


def test_workers_pass_their_backend_and_cache_folder_to_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = worker_engine_asking_for_openvino(tmp_path, monkeypatch, native_bf16=False)
    assert (engine.backend, engine.settings.cache_dir) == ("openvino", tmp_path)
    assert list((tmp_path / "openvino").glob("*.xml"))


def test_a_cpu_with_native_bf16_runs_torch_bf16_autocast_even_where_openvino_was_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Measured on an AVX512-BF16 CPU at 720p: eager bf16 autocast 2.1× the reference (+0.001 dB on
    # UCF101), OpenVINO fp32 1.4×, OpenVINO with a bf16 hint 1.95× but −0.18 dB (it warps in bf16 too).
    engine = worker_engine_asking_for_openvino(tmp_path, monkeypatch, native_bf16=True)
    assert (engine.backend, engine.dtype, engine.autocast_cpu_bf16) == ("eager", torch.bfloat16, True)
    assert not (tmp_path / "openvino").exists()


def test_auto_runs_openvino_on_cpus_and_openvino_is_refused_on_cuda() -> None:
    assert accel.resolve_backend("auto", CPU) == ("openvino" if accel.openvino_available() else "eager")
    assert accel.resolve_backend("auto", torch.device("cuda")) == "eager"
    assert accel.resolve_backend("compile", torch.device("cuda")) == "compile"
    with pytest.raises(InfiniteFlowError) as refused:
        accel.resolve_backend("openvino", torch.device("cuda"))
    assert refused.value.code == "E_INTERP_BAD_SETTINGS"


def test_the_weights_digest_changes_with_any_weight() -> None:
    net = TwoConvs(seed=1)
    before = accel.weights_digest(net)
    assert before == accel.weights_digest(TwoConvs(seed=1))
    with torch.no_grad():
        net.b.bias[0] += 1e-6
    assert accel.weights_digest(net) != before
