"""`model=auto`: each chunk gets the model that re-creates its own real frames better, within budget."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from infiniteflow_common.timing import Slot
from services.gpu_interp.chunk_work import planned_model
from services.gpu_interp.engines.base import Frames, InterpolationEngine
from services.gpu_interp.engines.models import MODELS
from services.gpu_interp.model_choice import (
    AutoModel,
    affordable_samples,
    check_window,
    choose_model,
    decided_by_rule,
    planned_passes,
    warm_up,
)
from services.gpu_interp.quality import busiest_window
from tests.support.frames import mse, panned


class Blend(InterpolationEngine):
    """Stand-in: the weighted average (poor wherever something moves)."""

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        return [(first * (1 - float(t)) + second * float(t)).round().astype(first.dtype) for t in times]


class Oracle(InterpolationEngine):
    """Stand-in that knows the scene: a pan of `step` px per frame, so its frames are exact."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.scale: float | None = None

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        # first is frame i - 1 of the pan (maybe through a lossy round trip): find i - 1 from the frame
        starts = [min(range(16), key=lambda k: mse(f, _pan(k, self.step))) for f in first]
        return [np.stack([_pan(s + 2 * float(t), self.step) for s in starts]) for t in times]

    def set_memory(self, scale: float | None, batch_size: int | None, tile: int | None = None) -> None:
        self.scale = scale
        self.tile = tile


def _pan(index: float, step: float) -> Any:
    return panned(32, 48, step * index)


def _chunk(count: int, step: float) -> list[Any]:
    return [_pan(i, step) for i in range(count)]


def _halves(pairs: int) -> dict[int, list[Fraction]]:
    return {i: [Fraction(1, 2)] for i in range(pairs)}


def test_a_job_that_names_its_model_gets_it_unchecked() -> None:
    frames = _chunk(9, 3)
    choice = choose_model("v4.25", {"hdv3": Blend(), "v4.25": Blend()}, frames.__getitem__, 9, _halves(8))
    assert (choice.model, choice.chosen_by, choice.scores) == ("v4.25", "job", {})


@pytest.mark.parametrize(("good", "bad"), [("hdv3", "v4.25"), ("v4.25", "hdv3")])
def test_the_model_that_recreates_the_chunks_frames_better_is_chosen(good: str, bad: str) -> None:
    frames = _chunk(9, 3)
    engines = {good: Oracle(3), bad: Blend()}
    choice = choose_model("auto", engines, frames.__getitem__, 9, _halves(8), budget=1.0)
    assert choice.model == good
    assert choice.chosen_by == "check"
    assert choice.scores[good] == 100.0  # exact frames: the PSNR cap
    assert choice.scores[bad] < 40
    # budget 1.0 × the cheaper plan (8 v4.25 passes × 0.45) / (1.45 passes per sample of both × 1.5): 1
    assert choice.quality is not None
    assert choice.quality.samples == 1
    assert choice.quality.window is None, "whole frames, since they fit"


def test_real_models_small_motion_goes_to_hdv3_large_motion_to_v425() -> None:
    """Constructed chunks where one model is clearly better (≥ 2 dB, measured when written):
    a 2 px/frame pan (HDv3 +3 dB) and a 28 px/frame pan (v4.25 +3 dB)."""
    from services.gpu_interp.engines.models import build_model
    from services.gpu_interp.engines.rife import RifeSettings

    settings = RifeSettings(device="cpu", precision="fp32", scale=1.0)
    engines = {name: build_model(name, settings) for name in MODELS}
    for step, expected in ((2, "hdv3"), (28, "v4.25")):
        frames = [panned(96, 128, step * i) for i in range(5)]
        # budget 4: 4 pairs × 0.45 × 4 / 1.45 → every inner frame (1, 2, 3) re-created by both models
        choice = choose_model("auto", engines, frames.__getitem__, 5, _halves(4), budget=4.0)
        assert choice.model == expected, f"{step} px/frame: {choice.scores}"
        loser = min(choice.scores.values())
        assert choice.scores[expected] - loser > 2.0


def test_real_models_in_windows_of_larger_frames() -> None:
    """At 288×352 the check sees 256×256 windows (one sample per model at a budget of 1). The 2 px/
    frame pan's whole-frame lead for HDv3 (5.6 dB, measured when written) is at the frame's edges,
    which a window cannot see (v4.25 is 0.3 dB ahead there): under the margin, the rule's HDv3
    stays. The 28 px/frame pan's lead for v4.25 shows in the window (+6 dB) and overrides the rule."""
    from services.gpu_interp.engines.models import build_model
    from services.gpu_interp.engines.rife import RifeSettings

    settings = RifeSettings(device="cpu", precision="fp32", scale=1.0)
    engines = {name: build_model(name, settings) for name in MODELS}
    for step, expected in ((2, "hdv3"), (28, "v4.25")):
        frames = [panned(288, 352, step * i) for i in range(5)]
        choice = choose_model("auto", engines, frames.__getitem__, 5, _halves(4), budget=1.0)
        assert choice.chosen_by == "check"
        assert choice.quality is not None
        assert (choice.quality.samples, choice.quality.window) == (1, (256, 256))
        assert choice.model == expected, f"{step} px/frame: {choice.scores}"


def test_other_timesteps_get_the_rule_because_a_half_way_check_cannot_judge_them() -> None:
    frames = _chunk(9, 3)
    thirds = {i: [Fraction(1, 3), Fraction(2, 3)] for i in range(8)}
    choice = choose_model(
        "auto", {"hdv3": Oracle(3), "v4.25": Blend()}, frames.__getitem__, 9, thirds, budget=1.0
    )
    assert (choice.model, choice.chosen_by, choice.scores) == ("v4.25", "rule", {})


def test_a_chunk_too_short_for_the_budget_gets_the_rule_without_any_check() -> None:
    calls: list[str] = []
    # 9 frames of 32×48: each sample re-creates a whole frame of both models, 1.45 passes > 6 % of 8

    class Counting(Blend):
        def _interpolate_times(
            self, first: Frames, second: Frames, times: Sequence[Fraction]
        ) -> list[Frames]:
            calls.append("pass")
            return super()._interpolate_times(first, second, times)

    frames = _chunk(9, 3)
    engines = {"hdv3": Counting(), "v4.25": Counting()}
    halves = choose_model("auto", engines, frames.__getitem__, 9, _halves(8))
    quarters = {i: [Fraction(1, 4), Fraction(1, 2), Fraction(3, 4)] for i in range(8)}
    fours = choose_model("auto", engines, frames.__getitem__, 9, quarters)
    assert (halves.model, halves.chosen_by) == ("hdv3", "rule")
    assert (fours.model, fours.chosen_by) == ("v4.25", "rule")
    assert calls == []


def test_planned_work_counts_bisection_for_hdv3_and_one_pass_per_time_for_v425() -> None:
    quarters = [[Fraction(1, 4), Fraction(1, 2), Fraction(3, 4)]] * 10
    assert planned_passes(MODELS["hdv3"], quarters) == 30
    assert planned_passes(MODELS["v4.25"], quarters) == pytest.approx(30 * MODELS["v4.25"].relative_cost)
    assert planned_passes(MODELS["hdv3"], [[Fraction(1, 4)]]) == 2  # 1/2 first, then 1/4
    fifths = [[Fraction(1, 5), Fraction(2, 5), Fraction(1, 2)]]
    assert planned_passes(MODELS["hdv3"], fifths) == 2  # one shared flow-scaling pass + 1/2


@pytest.mark.parametrize("pairs", [1, 6, 24, 48, 96, 500, 10_000])
@pytest.mark.parametrize(("height", "width"), [(240, 320), (540, 960), (1080, 1920), (2160, 3840)])
def test_the_choice_and_self_check_add_at_most_six_percent_whichever_model_wins(
    pairs: int, height: int, width: int
) -> None:
    both = [MODELS["hdv3"], MODELS["v4.25"]]
    halves = [[Fraction(1, 2)]] * pairs
    scale = 0.25 if height > 1440 else 1.0
    h, w = check_window(height, width, scale)
    samples = affordable_samples(pairs + 1, halves, both, frame_pixels=height * width, check_pixels=h * w)
    assert samples <= 3
    for winner in both:
        extra = samples * sum(m.relative_cost for m in both) * h * w
        assert extra <= 0.06 * planned_passes(winner, halves) * height * width + 1e-9


def test_windows_make_a_default_chunk_checkable_at_every_size() -> None:
    """Chunks as the splitter sizes them (60 s of engine time at 0.6 MPix/s, ≥ 8 frames, ×2):
    whole frames would afford a check only at 320×240; windows afford three frames up to 1080p
    (a 4K chunk of 7 pairs is too short even for one window: the rule decides)."""
    both = [MODELS["hdv3"], MODELS["v4.25"]]
    whole = {(240, 320): 3, (540, 960): 0, (1080, 1920): 0, (2160, 3840): 0}
    windows = {(240, 320): 3, (540, 960): 3, (1080, 1920): 3, (2160, 3840): 0}
    for (height, width), samples in whole.items():
        pairs = max(7, int(60 * 0.6e6 / (height * width)))
        halves = [[Fraction(1, 2)]] * pairs
        frame = height * width
        assert affordable_samples(pairs + 1, halves, both, frame_pixels=frame, check_pixels=frame) == samples
        h, w = check_window(height, width, 0.25 if height > 1440 else 1.0)
        got = affordable_samples(pairs + 1, halves, both, frame_pixels=frame, check_pixels=h * w)
        assert got == windows[height, width], f"{width}×{height}, {pairs} pairs"
    assert check_window(1080, 1920, 1.0) == (256, 256)
    assert check_window(2160, 3840, 0.25) == (1024, 1024), "the same content at the working scale"
    assert check_window(240, 320, 1.0) == (240, 256)


def test_the_worker_warms_the_candidates_up_on_the_checks_window_once_before_any_chunk() -> None:
    engines = {"hdv3": Counting(), "v4.25": Counting()}
    warm_up(engines)
    assert [(e.calls, e.pixels, e.compiled_calls) for e in engines.values()] == [(1, 256 * 256, 1)] * 2


def test_a_short_chunk_affords_no_check() -> None:
    both = [MODELS["hdv3"], MODELS["v4.25"]]
    halves = [[Fraction(1, 2)]] * 48
    assert affordable_samples(97, halves * 2, both, frame_pixels=240 * 320, check_pixels=240 * 256) == 1
    assert affordable_samples(49, halves, both, frame_pixels=240 * 320, check_pixels=240 * 256) == 0
    assert affordable_samples(2, [[Fraction(1, 2)]], both, budget=1.0) == 0  # no frame has two neighbours


class Counting(InterpolationEngine):
    """Blend that counts what it is asked for: calls, pairs and pixels, and whether compiled."""

    def __init__(self) -> None:
        self.calls = 0
        self.pixels = 0
        self.compiled_calls = 0
        self.eager = False

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        self.calls += 1
        self.pixels += int(first.shape[0] * first.shape[1] * first.shape[2]) * len(times)
        self.compiled_calls += 0 if self.eager else 1
        return Blend()._interpolate_times(first, second, times)

    @contextmanager
    def uncompiled(self) -> Iterator[None]:
        self.eager = True
        try:
            yield
        finally:
            self.eager = False


@pytest.mark.parametrize(("height", "width", "pairs"), [(240, 320, 468), (540, 960, 69), (1080, 1920, 17)])
def test_the_choice_reprocesses_at_most_six_percent_of_the_chunks_pixels(
    height: int, width: int, pairs: int
) -> None:
    """Counted in work, not time: both candidates' re-created pixels (× relative cost) stay within
    6 % of the winner's chunk, and no call runs on a compiling backend (no conversion for a new shape)."""
    rng = np.random.default_rng(1)
    frames = {i: rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for i in range(12)}
    engines = {"hdv3": Counting(), "v4.25": Counting()}
    choice = choose_model("auto", engines, frames.__getitem__, pairs + 1, _halves(pairs), window=12)
    assert choice.chosen_by == "check"
    assert choice.quality is not None
    assert choice.quality.samples == 3
    assert choice.quality.window == (min(height, 256), 256)
    spent = sum(MODELS[name].relative_cost * engine.pixels for name, engine in engines.items())
    for winner in MODELS.values():
        chunk = planned_passes(winner, _halves(pairs).values()) * height * width
        assert spent <= 0.06 * chunk
    # the warmed-up 256² window runs compiled (the chunk's cost per pixel); 240×256 is never converted
    assert [e.compiled_calls for e in engines.values()] == ([0, 0] if height < 256 else [1, 1])
    assert [e.calls for e in engines.values()] == [1, 1], "the samples go in one batch per model"


def test_the_window_is_where_the_neighbours_differ_most() -> None:
    before = np.zeros((270, 480, 3), np.uint8)
    after = before.copy()
    after[150:200, 300:380] = 255  # something moved here
    y, x = busiest_window(before, after, (64, 96))
    # the window covers the moved block (up to the 4 px grid it is measured on)
    assert y - 4 <= 150 <= 200 <= y + 64 + 4
    assert x - 4 <= 300 <= 380 <= x + 96 + 4
    assert busiest_window(before, after, (270, 480)) == (0, 0)


def test_auto_model_hands_memory_steps_to_every_candidate_and_runs_the_chosen_one() -> None:
    oracle, blend = Oracle(3), Oracle(3)
    auto = AutoModel({"hdv3": oracle, "v4.25": blend})
    auto.set_memory(0.5, 2, 1024)
    assert oracle.scale == blend.scale == 0.5
    assert oracle.tile == blend.tile == 1024
    frames = _chunk(9, 3)
    auto.engines["v4.25"] = Blend()
    choice = auto.choose(frames.__getitem__, 9, _halves(8), budget=1.0)
    assert auto.active == choice.model == "hdv3"
    out = auto.interpolate(frames[0], frames[2])
    assert np.array_equal(out, frames[1])


@pytest.mark.ffmpeg
def test_a_chunk_is_interpolated_by_the_chosen_model_whose_check_is_its_self_check() -> None:
    import av

    from infiniteflow_common.timing import Slot
    from services.gpu_interp.chunk_work import interpolate_chunk

    class Sink:
        count = 0

        def write(self, frame: Any) -> None:
            self.count += 1

        def write_rgb(self, rgb: Any) -> None:
            self.count += 1

    frames = [av.VideoFrame.from_ndarray(f, format="rgb24") for f in _chunk(9, 3)]
    auto = AutoModel({"hdv3": Blend(), "v4.25": Oracle(3)})
    slots = [Slot(i, Fraction(k, 2)) for i in range(8) for k in range(2)]
    slots.append(Slot(8, Fraction(0)))
    seen_windows: list[int] = []

    def choose(frame: Any, count: int, pairs: Any, *, window: int) -> Any:
        seen_windows.append(window)
        return auto.choose(frame, count, pairs, budget=1.0, window=window)

    sink = Sink()
    outcome = interpolate_chunk(
        auto, iter(frames), sink, slots, expected_frames=9, quality_budget=0.5, choose=choose
    )
    assert seen_windows == [9], "a chunk shorter than the window is checked on all its frames"
    assert sink.count == 17
    assert outcome.model_choice is not None
    assert outcome.model_choice.model == "v4.25"
    assert outcome.quality == outcome.model_choice.quality, "the choice's check is the self-check"
    assert outcome.quality is not None
    assert outcome.quality.psnr_db > 40
    assert outcome.check_seconds == outcome.model_choice.seconds, "the self-check is counted once"


def test_a_chunk_checked_apart_from_its_model_choice_counts_both() -> None:
    from services.gpu_interp.chunk_work import ChunkOutcome
    from services.gpu_interp.model_choice import ModelChoice
    from services.gpu_interp.quality import ChunkQuality

    own = ChunkQuality(psnr_db=35.0, ssim=0.95, samples=1, frames=(5,), seconds=0.5)
    by_rule = ChunkOutcome(frames_out=20, quality=own, model_choice=ModelChoice("hdv3", "rule"))
    assert by_rule.check_seconds == 0.5
    assert ChunkOutcome(frames_out=20, quality=None).check_seconds == 0.0
    assert ChunkOutcome(frames_out=20, quality=own).check_seconds == 0.5


def test_a_long_chunk_is_checked_on_its_leading_frames_only() -> None:
    """The choice happens before interpolation starts, so a worker holds at most the window's frames."""
    import av

    from infiniteflow_common.timing import Slot
    from services.gpu_interp.chunk_work import CHOICE_WINDOW, interpolate_chunk

    class Sink:
        count = 0

        def write(self, frame: Any) -> None:
            self.count += 1

        def write_rgb(self, rgb: Any) -> None:
            self.count += 1

    count = CHOICE_WINDOW * 4
    decoded: list[int] = []

    def frames() -> Any:
        for index, frame in enumerate(_chunk(count, 3)):
            decoded.append(index)
            yield av.VideoFrame.from_ndarray(frame, format="rgb24")

    auto = AutoModel({"hdv3": Blend(), "v4.25": Oracle(3)})
    slots = [Slot(i, Fraction(k, 2)) for i in range(count - 1) for k in range(2)]
    slots.append(Slot(count - 1, Fraction(0)))
    picked: list[tuple[int, int]] = []

    def choose(frame: Any, frame_count: int, pairs: Any, *, window: int) -> Any:
        picked.append((len(decoded), window))
        return auto.choose(frame, frame_count, pairs, budget=1.0, window=window)

    outcome = interpolate_chunk(
        auto, frames(), Sink(), slots, expected_frames=count, quality_budget=0.5, choose=choose
    )
    assert picked == [(CHOICE_WINDOW, CHOICE_WINDOW)], "chosen once, after decoding only the window"
    assert outcome.model_choice is not None
    assert outcome.model_choice.quality is not None
    assert max(outcome.model_choice.quality.frames) < CHOICE_WINDOW - 1


def test_the_worker_gives_auto_jobs_both_models_and_named_jobs_theirs() -> None:
    from types import SimpleNamespace
    from typing import cast

    from infiniteflow_common.deps import Deps
    from infiniteflow_common.events import ChunkReady
    from services.gpu_interp.config import WorkerSettings
    from services.gpu_interp.engine_registry import EngineCache
    from services.gpu_interp.handlers import ChunkHandler

    built: list[tuple[str, str, str]] = []

    class Cache:
        def get(self, name: str, quality: str, model: str = "hdv3") -> InterpolationEngine:
            built.append((name, quality, model))
            return Blend()

    deps = Deps(
        sessions=cast(Any, None), storage=cast(Any, None), catalog=cast(Any, None), publish=cast(Any, None)
    )
    handler = ChunkHandler(settings=WorkerSettings(), deps=deps, engines=cast(EngineCache, Cache()))
    spec = cast(ChunkReady, SimpleNamespace(engine="rife", quality="tta", model="auto"))
    engine, choose = handler._engine_for(spec)
    assert isinstance(engine, AutoModel)
    assert choose is not None
    assert built == [("rife", "tta", "hdv3"), ("rife", "tta", "v4.25")]
    built.clear()
    named = cast(ChunkReady, SimpleNamespace(engine="rife", quality="tta", model="v4.25"))
    engine, choose = handler._engine_for(named)
    assert (built, choose) == ([("rife", "tta", "v4.25")], None)
    flow = cast(ChunkReady, SimpleNamespace(engine="flow", quality="fast", model="auto"))
    _, choose = handler._engine_for(flow)
    assert choose is None, "the flow engine has no models to choose from"


def test_the_model_a_chunk_gets_by_rule_is_known_before_decoding_so_its_memory_plan_counts_one_model() -> (
    None
):
    halves = [0.0, 0.5, 0.0, 0.5]
    assert decided_by_rule(halves, 2) == "hdv3", "two frames: too short to check"
    assert decided_by_rule([0.0, 0.25, 0.5, 0.75], 40) == "v4.25", "×4: the check only measures t = 1/2"
    assert decided_by_rule(halves, 40) is None, "×2 with frames to sample: both models may be checked"
    pair = [
        Slot(0, Fraction(0)),
        Slot(0, Fraction(1, 2)),
        Slot(1, Fraction(0)),
    ]
    assert planned_model("auto", pair, 2) == ("hdv3", 0), "planned for one model, no choice pass"
    assert planned_model("auto", pair, 40) == ("auto", 12)
    assert planned_model("v4.25", pair, 2) == ("v4.25", 0)
