"""Peak memory of a chunk, estimated (`memory_plan`) against measured, per frame size and engine.

Each measurement runs in a fresh process, as a worker's first chunk at that size (the coldest case:
a compiling backend converts the network for the new size inside the chunk): a generated ×2 clip of
`--frames` frames is decoded, interpolated at the plan's scale and pairs per call and encoded with the
job's default encoder (libx264), exactly as `chunk_work` does in a worker. Measured: the process's
peak RSS during the chunk (VmHWM reset at its start) plus the encoder's peak RSS (its rusage).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_memory.py --budget-gb 5    # the table
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_memory.py --sizes 640x360 --cases flow

Each row is planned as a worker plans it (its engines loaded, the budget, BATCH_SIZE), then run. A
plan estimated above `--max-measure-gb` is not run (its row shows the plan and its estimate), and one
that fits nowhere is refused as the worker would refuse it; with `--budget-gb`, such a row is followed
by the plan this machine's own default budget would pick.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

GIB = 1 << 30
SIZES = {"360p": (640, 360), "1080p": (1920, 1080), "4K": (3840, 2160), "8K": (7680, 4320)}
CASES = {
    "flow": ("flow", ""),
    "rife hdv3": ("rife", "hdv3"),
    "rife v4.25": ("rife", "v4.25"),
    "rife auto": ("rife", "auto"),
}


def make_clip(path: Path, width: int, height: int, frames: int) -> None:
    """A moving test pattern, H.264 yuv420p (what uploads mostly are)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=25",
         "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip


def measure_one(args: dict[str, Any]) -> dict[str, Any]:
    """In this (fresh) process: plan one chunk as a worker does, then run it and measure its peaks.

    `args["force"]` runs at `scale`/`batch` whatever the budget says (calibration); otherwise a plan
    that does not fit, or is estimated above `max_measure` bytes, is reported and not run.
    """
    import av

    from infiniteflow_common.events import VideoEncoding
    from infiniteflow_common.timing import Slot
    from services.gpu_interp import memory_plan
    from services.gpu_interp.chunk_work import interpolate_chunk, planned_model
    from services.gpu_interp.config import WorkerSettings
    from services.gpu_interp.engine_registry import EngineCache
    from services.gpu_interp.engines.models import MODELS
    from services.gpu_interp.media_io import ChunkEncoder
    from services.gpu_interp.memory import release_memory
    from services.gpu_interp.model_choice import AutoModel
    from services.gpu_interp.process_memory import current_rss_bytes, peak_rss_bytes, reset_peak

    width, height, frames = args["width"], args["height"], args["frames"]
    engine_name, model, quality = args["engine"], args["model"], args.get("quality", "fast")
    settings = WorkerSettings()
    cache = EngineCache(settings)
    engine: Any
    if engine_name == "rife" and model == "auto":
        engine = AutoModel({name: cache.get("rife", quality, name) for name in MODELS})
    else:
        engine = cache.get(engine_name, quality, model or "hdv3")
    slots = [
        Slot(i, t)
        for i in range(frames)
        for t in ((Fraction(0), Fraction(1, 2)) if i < frames - 1 else (Fraction(0),))
    ]
    encoding = VideoEncoding(encoder="libx264", pix_fmt="yuv420p")
    planned, choice_window = planned_model(model or None, slots, frames)  # as a worker plans it
    shape = memory_plan.ChunkShape(
        width=width, height=height, engine=engine_name, model=planned, encoder=encoding.encoder, quality=quality,
        choice_window=choice_window, frames_out=len(slots),
    )  # fmt: skip
    release_memory()
    baseline = current_rss_bytes()
    if args.get("force"):
        scale, batch, tile = args["scale"], args["batch"], args.get("tile")
        plan = memory_plan.MemoryPlan(
            scale, batch, baseline, memory_plan.chunk_bytes(shape, scale, batch, tile), args["budget"], fits=True,
            tile=tile,
        )  # fmt: skip
    else:
        plan = memory_plan.plan_for(
            shape, budget_bytes=args["budget"], baseline_bytes=baseline,
            scale=engine.memory_scale(height, width), batch_size=args["batch"],
        )  # fmt: skip
    result = {**args, "scale": plan.scale, "batch_size": plan.batch_size, "tile": plan.tile, "fits": plan.fits,
              "baseline_bytes": baseline, "estimate_bytes": plan.estimate_bytes, "chunk_estimate_bytes": plan.chunk_bytes}  # fmt: skip
    if not plan.fits or (not args.get("force") and plan.estimate_bytes > args["max_measure"]):
        return result | {"measured_bytes": None}

    def choose(frame: Any, count: int, pair_times: Any, *, window: int) -> Any:
        # budget 1: the check always runs here, so the row measures the choice pass as well
        return engine.choose(frame, count, pair_times, budget=1.0, batch_size=plan.batch_size, window=window)

    engine.set_memory(plan.scale, plan.batch_size, plan.tile)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, width, height, frames)
        release_memory()
        start = current_rss_bytes()
        reset = reset_peak()
        started = time.perf_counter()
        with (
            av.open(str(clip)) as container,
            ChunkEncoder(
                Path(tmp) / "out.mkv", encoding, width=width, height=height, rate=Fraction(50), timeout_s=3600
            ) as sink,
        ):
            outcome = interpolate_chunk(
                engine, container.decode(video=0), sink, slots, expected_frames=frames,
                batch_size=plan.batch_size, quality_budget=0.04,
                choose=choose if isinstance(engine, AutoModel) else None,
            )  # fmt: skip
        seconds = time.perf_counter() - started
        worker_peak = peak_rss_bytes()
    return result | {
        "reset": reset,
        "start_bytes": start,
        "worker_peak_delta_bytes": worker_peak - start,
        "encoder_peak_bytes": sink.peak_rss_bytes,
        # the whole worker, as the worker logs it: its peak RSS plus its encoder's
        "measured_bytes": worker_peak + sink.peak_rss_bytes,
        "frames_out": outcome.frames_out,
        "seconds": round(seconds, 1),
        "model_chosen": outcome.model_choice.model if outcome.model_choice else None,
    }


def run_child(args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """`measure_one` in a fresh interpreter (a clean peak and no engine left resident)."""
    done = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(args)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"measurement {args} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:,.0f}"


def _row(size: str, case: str, row: dict[str, Any], budget: int) -> str:
    plan = f"{row['scale']} | {row['batch_size']} | {row.get('tile') or '—'}"
    if not row["fits"]:
        return f"| {size} | {case} | {plan} | {_mib(row['estimate_bytes'])} | — | — | refused at once: over {_mib(budget)} MiB |"
    if row["measured_bytes"] is None:
        return f"| {size} | {case} | {plan} | {_mib(row['estimate_bytes'])} | — | — | not run (over the measuring limit) |"
    ratio = row["estimate_bytes"] / row["measured_bytes"]
    parts = f"{_mib(row['start_bytes'])} + {_mib(row['worker_peak_delta_bytes'])} + {_mib(row['encoder_peak_bytes'])}"
    return (
        f"| {size} | {case} | {plan} | {_mib(row['estimate_bytes'])} | {_mib(row['measured_bytes'])} | "
        f"{ratio:.2f} | {parts}; {row['seconds']} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="360p,1080p,4K,8K", help="names (360p…8K) or WxH, comma-separated")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument(
        "--frames", type=int, default=14, help="source frames per chunk (≥ 12: auto's window)"
    )
    parser.add_argument(
        "--batch", type=int, default=4, help="pairs per call configured (the worker's BATCH_SIZE)"
    )
    parser.add_argument(
        "--budget-gb", type=float, default=None, help="worker budget (default: the worker's own)"
    )
    parser.add_argument("--workers", type=int, default=2, help="local workers for the default budget")
    parser.add_argument(
        "--max-measure-gb", type=float, default=5.5, help="do not run plans estimated above this"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--force",
        default=None,
        help="SCALE,PAIRS[,TILE]: run at these settings whatever the plan (calibration)",
    )
    options = parser.parse_args()
    if options.one:
        print(json.dumps(measure_one(json.loads(options.one))))
        return
    from services.gpu_interp.config import WorkerSettings, default_memory_budget

    machine = default_memory_budget(WorkerSettings(local_workers=options.workers))
    budget = int(options.budget_gb * GIB) if options.budget_gb else machine
    print(
        f"budget {_mib(budget)} MiB (this machine's default for {options.workers} workers: {_mib(machine)} MiB); "
        f"{options.frames}-frame ×2 chunks, libx264, BATCH_SIZE={options.batch}; each row a fresh process"
    )
    print("| size | engine | scale | pairs/call | tile | estimate (MiB) | measured peak (MiB) | estimate / measured | "
          "measured = at start + chunk + encoder |")  # fmt: skip
    print("|" + "---|" * 9)
    rows = []
    for size in options.sizes.split(","):
        width, height = SIZES[size] if size in SIZES else tuple(int(v) for v in size.lower().split("x"))
        for case in options.cases.split(","):
            engine, model = CASES[case]
            args = {"width": width, "height": height, "engine": engine, "model": model, "frames": options.frames,
                    "batch": options.batch, "budget": budget, "max_measure": int(options.max_measure_gb * GIB)}  # fmt: skip
            if options.force:
                forced = options.force.split(",")
                args |= {"force": True, "scale": float(forced[0]), "batch": int(forced[1]),
                         "tile": int(forced[2]) if len(forced) > 2 else None}  # fmt: skip
            row = run_child(args, timeout_s=3600)
            print(_row(size, case, row, budget), flush=True)
            rows.append(row)
            if not row["fits"] and budget != machine:  # what this machine's own budget would do
                row = run_child(args | {"budget": machine, "max_measure": 0}, timeout_s=600)
                print(_row(size, f"{case} (budget {_mib(machine)} MiB)", row, machine), flush=True)
                rows.append(row)
    if options.json:
        options.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
