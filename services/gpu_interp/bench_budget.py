"""What `model=auto`'s choice and the quality self-check cost, against the chunk they serve.

Each case is one chunk as the splitter sizes it (`chunk_target_s` of engine time at the splitter's
default CPU rate for `rife`), ×2, of the generated clip (`bench.render`: a pan and two crossing
squares), interpolated the way a worker does it: the handler's own `model=auto` hook, its settings,
the engine registry (OpenVINO for hdv3 on CPUs), the streaming chunk loop with a frame-counting
sink (no encoder: a smaller denominator, so a higher share than the worker's log shows). Each size
runs twice in one process with an empty compile cache: the first chunk meets a new frame size (the
case where converting the network for it lands in whoever calls the engine first), the second is
steady state.

share = (model_choice_seconds + quality_seconds outside the choice) ÷ the chunk's seconds.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

SIZES = ((320, 240), (960, 540), (1920, 1080))
RIFE_MPIX_PER_S = 0.6  # the splitter's default CPU rate for rife (services/splitter/config.py)
MIN_FRAMES = 8
BENCH_FRAMES = {(320, 240): 97, (960, 540): 69, (1920, 1080): 18}
"""Source frames per chunk in `make bench`: 960×540 as in issue 20's log (68 pairs), 1080p as the
splitter sizes it (60 s), 320×240 shorter than the splitter's 468 pairs (a harder case for a budget)."""


@dataclass(frozen=True)
class BudgetRow:
    """One chunk: its size, pairs, how the model was picked, and the seconds spent."""

    size: str
    run: str
    pairs: int
    model: str
    chosen_by: str
    samples: int
    seconds: float
    choice_s: float
    quality_s: float

    @property
    def check_s(self) -> float:
        """Seconds of choice and self-check together (the chosen model's check counted once)."""
        return self.choice_s + self.quality_s

    @property
    def share(self) -> float:
        return self.check_s / self.seconds if self.seconds > 0 else 0.0


def chunk_frames(width: int, height: int, target_s: float) -> int:
    """Source frames of a ×2 chunk of `target_s` engine seconds (the splitter's sizing rule)."""
    pairs = int(target_s * RIFE_MPIX_PER_S * 1e6 / (width * height))
    return max(MIN_FRAMES, pairs + 1)


def run_chunk(handler: Any, width: int, height: int, frames: int, offset: float) -> tuple[Any, float]:
    """Interpolate one ×2 `model=auto` chunk as the worker does; (outcome, seconds)."""
    import av

    from infiniteflow_common.timing import Slot
    from services.gpu_interp.bench import render
    from services.gpu_interp.chunk_work import interpolate_with_retries

    class Sink:
        count = 0

        def write(self, frame: Any) -> None:
            self.count += 1

        def write_rgb(self, rgb: Any) -> None:
            self.count += 1

        def __enter__(self) -> Sink:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    source = [
        av.VideoFrame.from_ndarray(render(offset + 2.0 * i, height, width), format="rgb24").reformat(
            format="yuv420p"
        )
        for i in range(frames)
    ]
    slots = [Slot(i, Fraction(k, 2)) for i in range(frames - 1) for k in range(2)]
    slots.append(Slot(frames - 1, Fraction(0)))
    chunk = cast(Any, SimpleNamespace(engine="rife", quality="fast", model="auto"))
    s = handler.settings
    engine, choose = handler._engine_for(chunk)
    started = time.perf_counter()
    outcome = interpolate_with_retries(
        engine,
        lambda: iter(source),
        Sink,
        slots,
        height=height,
        width=width,
        batch_size=s.batch_size,
        min_scale=s.min_scale,
        expected_frames=frames,
        quality_budget=s.quality_budget,
        quality_samples=s.quality_samples,
        choose=choose,
    )
    return outcome, time.perf_counter() - started


def measure(
    sizes: tuple[tuple[int, int], ...] = SIZES,
    target_s: float = 60.0,
    runs: int = 2,
    frames: dict[tuple[int, int], int] | None = None,
) -> list[BudgetRow]:
    """Every size's chunks (first meets a new frame size, then steady state), in this process."""
    from infiniteflow_common.deps import Deps
    from services.gpu_interp.config import WorkerSettings
    from services.gpu_interp.engine_registry import EngineCache
    from services.gpu_interp.handlers import ChunkHandler

    rows: list[BudgetRow] = []
    with tempfile.TemporaryDirectory() as cache:
        settings = WorkerSettings(compile_cache_dir=Path(cache), metrics_port=None)
        deps = Deps(
            sessions=cast(Any, None),
            storage=cast(Any, None),
            catalog=cast(Any, None),
            publish=cast(Any, None),
        )
        handler = ChunkHandler(settings=settings, deps=deps, engines=EngineCache(settings))
        for width, height in sizes:
            count = (frames or {}).get((width, height)) or chunk_frames(width, height, target_s)
            for run in range(runs):
                outcome, seconds = run_chunk(handler, width, height, count, offset=run * 7.0)
                choice = outcome.model_choice
                quality = outcome.quality
                inside = choice is not None and quality is not None and quality == choice.quality
                row = BudgetRow(
                    size=f"{width}×{height}",
                    run="new size" if run == 0 else "steady",
                    pairs=count - 1,
                    model=choice.model if choice else "—",
                    chosen_by=choice.chosen_by if choice else "—",
                    samples=quality.samples if quality else 0,
                    seconds=seconds,
                    choice_s=choice.seconds if choice else 0.0,
                    quality_s=0.0 if inside or quality is None else quality.seconds,
                )
                rows.append(row)
                print(
                    f"{row.size} {row.run}: {row.pairs} pairs, {row.model} ({row.chosen_by}), "
                    f"{row.samples} samples, chunk {row.seconds:.1f} s, choice {row.choice_s:.2f} s, "
                    f"self-check outside it {row.quality_s:.2f} s, share {row.share:.1%}",
                    flush=True,
                )
    return rows


def render_rows(rows: list[BudgetRow], label: str = "") -> list[str]:
    """Markdown table rows (no header) for `rows`."""
    return [
        f"| {label}{r.size} | {r.run} | {r.pairs} | {r.model} ({r.chosen_by}) | {r.samples} | "
        f"{r.seconds:.1f} | {r.choice_s:.2f} | {r.quality_s:.2f} | {r.share:.1%} |"
        for r in rows
    ]


TABLE_HEADER = [
    "| chunk | run | pairs | model (chosen by) | checked frames | chunk s | model_choice_seconds | "
    "quality_seconds outside the choice | share |",
    "|---|---|---|---|---|---|---|---|---|",
]
