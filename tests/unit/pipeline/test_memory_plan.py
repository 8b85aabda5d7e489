"""A worker plans a chunk's memory before decoding: the heaviest settings that fit its budget, or none."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from services.gpu_interp import memory_plan
from services.gpu_interp.config import WorkerSettings, default_memory_budget
from services.gpu_interp.memory_plan import (
    ChunkShape,
    chunk_bytes,
    encoder_bytes,
    engine_bytes,
    plan_for,
    steps,
    too_large,
)
from services.gpu_interp.process_memory import (
    cgroup_limit_bytes,
    current_rss_bytes,
    peak_rss_bytes,
    reset_peak,
)

GIB = 1 << 30


def _shape(
    width: int = 1920, height: int = 1080, engine: str = "rife", model: str | None = "hdv3"
) -> ChunkShape:
    return ChunkShape(width=width, height=height, engine=engine, model=model, encoder="libx264")


def test_the_estimate_grows_with_frame_size_scale_and_pairs_per_call() -> None:
    shape = _shape()
    assert chunk_bytes(_shape(3840, 2160), 1.0, 4) > chunk_bytes(shape, 1.0, 4)
    assert chunk_bytes(shape, 1.0, 4) > chunk_bytes(shape, 0.5, 4) > chunk_bytes(shape, 0.25, 4)
    assert chunk_bytes(shape, 0.5, 4) > chunk_bytes(shape, 0.5, 2) > chunk_bytes(shape, 0.5, 1)


def test_auto_costs_its_heavier_model_and_the_frames_its_choice_holds() -> None:
    auto = ChunkShape(
        width=1920, height=1080, engine="rife", model="auto", encoder="libx264", choice_window=12
    )
    # the models run one after the other: the heavier one counts, plus the 12 frames the choice holds
    heavier = max(engine_bytes(_shape(model="hdv3"), 0.5, 1), engine_bytes(_shape(model="v4.25"), 0.5, 1))
    assert engine_bytes(auto, 0.5, 1) > heavier + 12 * 1920 * 1080 * 4


def test_an_unmeasured_encoder_is_planned_as_heavier_than_x264() -> None:
    x264 = _shape()
    other = ChunkShape(width=1920, height=1080, engine="rife", model="hdv3", encoder="libsomething")
    assert chunk_bytes(other, 1.0, 1) > chunk_bytes(x264, 1.0, 1)


def test_candidates_keep_the_highest_scale_first_and_shrink_pairs_before_scale() -> None:
    assert list(steps(1.0, 4, min_scale=0.25)) == [
        (1.0, 4), (1.0, 2), (1.0, 1), (0.5, 4), (0.5, 2), (0.5, 1), (0.25, 4), (0.25, 2), (0.25, 1),
    ]  # fmt: skip
    assert list(steps(None, 3)) == [(None, 3), (None, 1)], "an engine without a scale varies pairs only"


def test_a_roomy_budget_keeps_the_configured_settings() -> None:
    plan = plan_for(_shape(640, 360), budget_bytes=64 * GIB, baseline_bytes=GIB // 2, scale=1.0, batch_size=4)
    assert (plan.scale, plan.batch_size, plan.fits, plan.lighter) == (1.0, 4, True, False)
    assert plan.estimate_bytes == GIB // 2 + chunk_bytes(_shape(640, 360), 1.0, 4)


def test_a_tight_budget_picks_the_heaviest_settings_that_fit() -> None:
    shape = _shape(3840, 2160)
    budget = GIB // 2 + chunk_bytes(shape, 0.5, 1)
    assert chunk_bytes(shape, 0.5, 2) > chunk_bytes(shape, 0.5, 1)
    plan = plan_for(shape, budget_bytes=budget, baseline_bytes=GIB // 2, scale=0.5, batch_size=4)
    assert (plan.scale, plan.batch_size, plan.fits, plan.lighter) == (0.5, 1, True, True)
    assert plan.estimate_bytes <= budget
    smaller = plan_for(shape, budget_bytes=budget - 1, baseline_bytes=GIB // 2, scale=0.5, batch_size=4)
    assert (smaller.scale, smaller.fits) == (0.25, True), "then the next scale down"
    assert smaller.estimate_bytes < budget


def test_what_the_worker_already_holds_counts_against_the_budget() -> None:
    shape = _shape(1920, 1080)
    budget = 2 * GIB + chunk_bytes(shape, 1.0, 4)
    assert (
        plan_for(shape, budget_bytes=budget, baseline_bytes=2 * GIB, scale=1.0, batch_size=4).batch_size == 4
    )
    assert plan_for(shape, budget_bytes=budget, baseline_bytes=3 * GIB, scale=1.0, batch_size=4).lighter


def test_a_chunk_that_fits_nowhere_gets_the_lightest_plan_marked_unfit_and_a_clear_error() -> None:
    shape = ChunkShape(
        width=7680, height=4320, engine="rife", model="auto", encoder="libx264", choice_window=12
    )
    plan = plan_for(shape, budget_bytes=2 * GIB, baseline_bytes=GIB // 2, scale=0.25, batch_size=4)
    assert (plan.scale, plan.batch_size, plan.tile, plan.fits) == (0.25, 1, min(memory_plan.TILES), False)
    error = too_large(shape, plan)
    assert error.code == "E_CHUNK_TOO_LARGE_FOR_MEMORY"
    assert "7680×4320" in error.message
    assert "1024-pixel tiles" in error.message
    assert "WORKER_MEMORY_BYTES" in error.message
    assert "2,048 MiB" in error.message


def test_tiles_are_the_last_lever_the_largest_that_fits_at_the_lowest_scale_and_one_pair() -> None:
    shape = _shape(7680, 4320, model="auto")
    whole = chunk_bytes(shape, 0.25, 1)
    tiled = {tile: chunk_bytes(shape, 0.25, 1, tile) for tile in memory_plan.TILES}
    assert whole > max(tiled.values())
    assert sorted(tiled.values()) == [tiled[t] for t in sorted(memory_plan.TILES)], (
        "a smaller tile costs less"
    )
    for tile in memory_plan.TILES:
        plan = plan_for(shape, budget_bytes=GIB + tiled[tile], baseline_bytes=GIB, scale=0.25, batch_size=4)
        assert (plan.scale, plan.batch_size, plan.fits, plan.lighter) == (0.25, 1, True, True)
        assert plan.tile == max(t for t in memory_plan.TILES if tiled[t] <= tiled[tile])
    roomy = plan_for(shape, budget_bytes=GIB + whole, baseline_bytes=GIB, scale=0.25, batch_size=4)
    assert roomy.tile is None, "whole frames whenever they fit"


def test_the_default_budget_of_two_workers_on_24_gib_runs_8k_rife_tiled() -> None:
    budget = int(0.8 * 24 * GIB / 2)
    for model in ("hdv3", "v4.25", "auto"):
        shape = ChunkShape(
            width=7680, height=4320, engine="rife", model=model, encoder="libx264",
            choice_window=2 if model == "auto" else 0, frames_out=3,
        )  # fmt: skip
        plan = plan_for(shape, budget_bytes=budget, baseline_bytes=700 << 20, scale=0.25, batch_size=4)
        assert plan.fits, model
        assert plan.tile is not None, model


def test_a_tile_is_counted_with_its_overlap_and_padding_and_the_frame_sized_rest() -> None:
    shape = _shape(7680, 4320)
    px = memory_plan.tile_pixels(shape, "hdv3", 0.25, 1024)
    assert 1024 * 1024 < px < (1024 + 4 * memory_plan.OVERLAP + 128) ** 2
    frame_part = shape.pixels * memory_plan.TILED_FRAME_PIXEL
    assert engine_bytes(shape, 0.25, 1, 1024) - engine_bytes(_shape(1024, 1024), 0.25, 1) >= frame_part * 0.99


def test_flow_and_frames_no_larger_than_a_tile_are_never_tiled() -> None:
    assert memory_plan.tiles_for(_shape(7680, 4320, engine="flow", model=None)) == []
    assert memory_plan.tiles_for(_shape(1920, 1080)) == [1536, 1024]
    assert memory_plan.tiles_for(_shape(640, 360)) == []
    flow = plan_for(
        _shape(7680, 4320, engine="flow", model=None),
        budget_bytes=GIB,
        baseline_bytes=0,
        scale=0.5,
        batch_size=4,
    )
    assert (flow.fits, flow.tile) == (False, None)


def test_the_budget_is_the_setting_else_a_share_of_the_machine_per_local_worker() -> None:
    assert default_memory_budget(WorkerSettings(worker_memory_bytes=3 * GIB)) == 3 * GIB
    one = default_memory_budget(WorkerSettings(local_workers=1, memory_share=0.8))
    two = default_memory_budget(WorkerSettings(local_workers=2, memory_share=0.8))
    assert two == pytest.approx(one / 2, abs=1)
    assert 0 < one < memory_plan.MIB * 1024 * 4096


def test_a_cgroup_limit_is_read_from_v2_and_v1_and_max_means_none(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cg"
    proc.mkdir()
    (root / "svc").mkdir(parents=True)
    (proc / "cgroup").write_text("0::/svc\n")
    (root / "svc" / "memory.max").write_text("4294967296\n")
    assert cgroup_limit_bytes(root, proc) == 4 * GIB
    (root / "svc" / "memory.max").write_text("max\n")
    assert cgroup_limit_bytes(root, proc) is None
    (proc / "cgroup").write_text("4:memory:/pod\n0::/\n")
    (root / "memory" / "pod").mkdir(parents=True)
    (root / "memory" / "pod" / "memory.limit_in_bytes").write_text(str(2 * GIB))
    assert cgroup_limit_bytes(root, proc) == 2 * GIB
    (root / "memory" / "pod" / "memory.limit_in_bytes").write_text(str(9223372036854771712))
    assert cgroup_limit_bytes(root, proc) is None


def test_the_peak_of_a_chunk_restarts_from_the_current_rss() -> None:
    if not reset_peak():
        pytest.skip("this kernel does not let a process reset its peak RSS")
    # an anonymous mapping of its own, touched page by page and unmapped: the allocator cannot keep it
    # (a numpy block may stay in a malloc arena of a long-lived, many-threaded test process)
    block = mmap.mmap(-1, 64 * memory_plan.MIB)
    for page in range(0, 64 * memory_plan.MIB, mmap.PAGESIZE):
        block[page] = 1
    assert peak_rss_bytes() >= current_rss_bytes() >= 64 * memory_plan.MIB
    block.close()
    assert peak_rss_bytes() - current_rss_bytes() >= 60 * memory_plan.MIB, "the peak remembers the block"
    assert reset_peak()
    assert peak_rss_bytes() - current_rss_bytes() < 8 * memory_plan.MIB, "a reset starts from now"


def test_the_encoders_peak_is_its_own_not_the_workers_it_was_forked_from(tmp_path: Path) -> None:
    from fractions import Fraction

    from infiniteflow_common.events import VideoEncoding
    from services.gpu_interp.media_io import ChunkEncoder

    held = np.ones(400 * memory_plan.MIB, np.uint8)  # a worker holding an engine's worth of memory
    encoding = VideoEncoding(encoder="libx264", pix_fmt="yuv420p", crf=20, preset="ultrafast")
    with ChunkEncoder(
        tmp_path / "c.mkv", encoding, width=64, height=48, rate=Fraction(25), timeout_s=60
    ) as sink:
        for _ in range(5):
            sink.write_rgb(np.zeros((48, 64, 3), np.uint8))
    assert 0 < sink.peak_rss_bytes < 300 * memory_plan.MIB
    assert held.sum() > 0


def test_a_cuda_worker_plans_only_the_host_side_of_rife() -> None:
    cpu = _shape(3840, 2160)
    cuda = ChunkShape(
        width=3840, height=2160, engine="rife", model="hdv3", encoder="libx264", device="cuda:0"
    )
    assert engine_bytes(cuda, 0.5, 4) < engine_bytes(cpu, 0.5, 4) / 4
    assert engine_bytes(cuda, 0.5, 4) == engine_bytes(cuda, 0.25, 4), "the flow scale works on the device"


def test_rifes_augmenting_quality_modes_cost_more_per_pair() -> None:
    fast = _shape()
    tta = ChunkShape(width=1920, height=1080, engine="rife", model="hdv3", encoder="libx264", quality="tta")
    best = ChunkShape(width=1920, height=1080, engine="rife", model="hdv3", encoder="libx264", quality="best")
    assert engine_bytes(fast, 1.0, 2) < engine_bytes(tta, 1.0, 2) < engine_bytes(best, 1.0, 2)


def test_x264_is_planned_by_the_frames_its_preset_holds_and_the_chunk_has() -> None:
    def encoder(preset: str | None, frames_out: int | None) -> float:
        shape = ChunkShape(
            width=3840, height=2160, engine="flow", model=None, encoder="libx264", preset=preset
        )
        return encoder_bytes(ChunkShape(**{**shape.__dict__, "frames_out": frames_out}))

    assert (
        encoder("veryslow", None) > encoder(None, None) == encoder("medium", None) > encoder("veryfast", None)
    )
    assert encoder(None, 3) < encoder(None, 30) < encoder(None, 48) == encoder(None, 500), (
        "flat past the lookahead"
    )
