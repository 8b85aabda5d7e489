"""`make gpu-check`: everything worth knowing about a CUDA machine, in one run, as a report.

On a machine with CUDA it
1. runs the CUDA-marked tests (`pytest -m gpu`);
2. compares fp16 with fp32 for both RIFE models: PSNR between the two outputs, and each against the
   UCF101 ground truth (../shared/data/vfi/ucf101; generated frames when absent);
3. measures pairs/s at 720p and 1080p, batch 1/4/8, for each model in eager mode, `torch.compile`
   with CUDA graphs (`mode="reduce-overhead"`) and, when `torch_tensorrt` imports, TensorRT fp16;
4. runs one 1080p ×2 job through the running pipeline (`make up`, services started with DEVICE=cuda)
   and reads its stage timings from PostgreSQL;
and writes `report.md` and `report.json` into a new folder (printed at the end). It keeps to a time
budget (default 7.5 minutes): throughput cases are planned with cost estimates, the costly ones last,
and a case that would not fit is reported as skipped rather than run. A failing step is recorded and
the next one runs.

Without CUDA it says so and exits with status 2; `--dry-run` prints the plan and exits 0 anywhere.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEVSET = ROOT.parent / "shared" / "data" / "vfi" / "ucf101"
SIZES: dict[str, tuple[int, int]] = {"720p": (720, 1280), "1080p": (1080, 1920)}
BATCHES = (1, 4, 8)
MODELS = ("hdv3", "v4.25")
BACKENDS = ("eager", "compile", "tensorrt")
# Seconds a backend needs to build its runner for one (model, size) before the timed runs, a guess
# from public reports, deliberately high so the plan errs towards skipping. The runner takes every
# batch (compile: a dynamic batch dimension, CUDA graphs recorded per batch; TensorRT: a 1–8 profile),
# so only a group's first case pays it.
SETUP_SECONDS = {"eager": 2.0, "compile": 45.0, "tensorrt": 90.0}
NO_CUDA_EXIT = 2
BEFORE_THROUGHPUT_S = 90.0  # planning guess for the tests and the precision step
PIPELINE_RESERVE_S = 90.0  # kept back for the pipeline job (a 4 s 1080p clip)


@dataclass(frozen=True)
class Case:
    """One throughput measurement: a model at a size and batch on a backend."""

    model: str
    size: str
    batch: int
    backend: str

    @property
    def label(self) -> str:
        return f"{self.model} {self.size} b{self.batch} {self.backend}"

    @property
    def group(self) -> tuple[str, str, str]:
        """Cases of one group share a compiled runner."""
        return self.model, self.size, self.backend


@dataclass
class Planned:
    """A case and whether the plan runs it (`skip` says why not)."""

    case: Case
    estimate_s: float
    skip: str | None = None


@dataclass
class Report:
    """Everything the run found; `render_markdown` turns it into the report page."""

    started_at: str
    machine: dict[str, Any] = field(default_factory=dict)
    tests: dict[str, Any] = field(default_factory=dict)
    precision: list[dict[str, Any]] = field(default_factory=list)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    pipeline: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see --help)."""
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="report folder (default reports/gpu-check-<time>)"
    )
    parser.add_argument("--budget", type=float, default=450.0, help="seconds the whole run may take")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--iterations", type=int, default=20, help="timed forward passes per case")
    parser.add_argument("--no-tests", action="store_true", help="skip the CUDA-marked tests")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the 1080p pipeline job")
    parser.add_argument("--pipeline-seconds", type=int, default=4, help="length of the pipeline clip")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; needs no GPU")
    args = parser.parse_args(argv)
    if any(b < 1 for b in args.batches):
        parser.error("batches must be at least 1")
    if args.budget <= 0 or args.iterations < 1:
        parser.error("--budget must be positive and --iterations at least 1")
    return args


def estimate_seconds(
    case: Case, iterations: int, pairs_per_s: Callable[[Case], float], *, first_of_group: bool = True
) -> float:
    """Setup (for a group's first case) plus warm-up plus timed passes of one case."""
    passes = iterations + 3
    setup = SETUP_SECONDS[case.backend] if first_of_group else 1.0
    return setup + passes * case.batch / max(pairs_per_s(case), 1e-6)


def guess_pairs_per_s(case: Case) -> float:
    """A prior for planning (an H100 in fp16, eager): 1080p is ~2.25× the pixels of 720p."""
    base = {"hdv3": 60.0, "v4.25": 120.0}.get(case.model, 60.0)
    return base * (1.0 if case.size == "720p" else 1 / 2.25)


def plan(
    cases: Sequence[Case],
    budget_s: float,
    iterations: int,
    *,
    available: Callable[[str], str | None] = lambda backend: None,
    pairs_per_s: Callable[[Case], float] = guess_pairs_per_s,
) -> list[Planned]:
    """Which cases run within `budget_s`, in priority order: every eager case first (cheap, the
    baseline), then the compiled ones, 1080p before 720p and v4.25 before hdv3 (the issue's goal is
    v4.25 at 1080p), TensorRT before torch.compile within each; `available(backend)` says why a
    backend cannot run at all (None: it can)."""

    def priority(case: Case) -> tuple[bool, bool, bool, bool, int]:
        compiled = case.backend != "eager"
        return compiled, case.size != "1080p", case.model != "v4.25", case.backend != "tensorrt", case.batch

    out: list[Planned] = []
    left = budget_s
    built: set[tuple[str, str, str]] = set()
    for case in sorted(cases, key=priority):
        cost = estimate_seconds(case, iterations, pairs_per_s, first_of_group=case.group not in built)
        reason = available(case.backend)
        if reason is None and cost > left:
            reason = f"time budget ({cost:.0f} s needed, {max(left, 0):.0f} s left)"
        if reason is None:
            left -= cost
            built.add(case.group)
        out.append(Planned(case, cost, reason))
    return out


def all_cases(args: argparse.Namespace) -> list[Case]:
    """Every (model, size, batch, backend) the options ask for."""
    return [
        Case(m, s, b, k) for k in args.backends for m in args.models for s in args.sizes for b in args.batches
    ]


def summarise_pytest(output: str, returncode: int) -> dict[str, Any]:
    """Counts from pytest's last line ('3 passed, 1 skipped in 2.0s') and whether it succeeded."""
    counts = {
        word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)
    }
    return {"ok": returncode in (0, 5), "returncode": returncode, **counts}  # 5: no tests collected


def render_markdown(report: Report) -> str:
    """The report page: machine, tests, precision, throughput, pipeline, errors."""
    lines = ["# GPU check", "", f"Started {report.started_at}, took {report.seconds:.0f} s.", ""]
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in report.machine.items()] + [""]
    lines += ["## CUDA-marked tests", ""]
    if report.tests:
        counts = ", ".join(
            f"{v} {k}" for k, v in report.tests.items() if k not in ("ok", "returncode", "tail")
        )
        lines += [f"{'passed' if report.tests.get('ok') else 'FAILED'}: {counts or 'no summary'}", ""]
    else:
        lines += ["not run", ""]
    lines += ["## fp16 against fp32", ""]
    if report.precision:
        lines += [
            "| model | frames | PSNR fp16 vs fp32 (dB) | fp32 vs truth (dB) | fp16 vs truth (dB) |",
            "|---|---|---|---|---|",
        ]
        for row in report.precision:
            truth32, truth16 = row.get("fp32_vs_truth_db"), row.get("fp16_vs_truth_db")
            lines.append(
                f"| {row['model']} | {row['frames']} | {row['fp16_vs_fp32_db']:.2f} | "
                f"{'—' if truth32 is None else f'{truth32:.2f}'} | {'—' if truth16 is None else f'{truth16:.2f}'} |"
            )
    else:
        lines.append("not run")
    lines += ["", "## Throughput (network only, fp16, frames already on the GPU)", ""]
    if report.throughput:
        lines += ["| model | size | batch | backend | pairs/s | note |", "|---|---|---|---|---|---|"]
        for row in report.throughput:
            rate = row.get("pairs_per_s")
            lines.append(
                f"| {row['model']} | {row['size']} | {row['batch']} | {row['backend']} | "
                f"{'—' if rate is None else f'{rate:.1f}'} | {row.get('note', '')} |"
            )
    else:
        lines.append("not run")
    lines += ["", "## One 1080p ×2 job through the pipeline (DEVICE=cuda)", ""]
    if report.pipeline:
        lines += [f"- {k}: {v}" for k, v in report.pipeline.items()]
    else:
        lines.append("not run")
    if report.errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in report.errors]
    return "\n".join(lines) + "\n"


def write_report(report: Report, folder: Path) -> Path:
    """`report.md` and `report.json` into `folder` (created); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return folder


# -- the measurements (CUDA only) ---------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
        "tensorrt": tensorrt_missing() or "torch_tensorrt available",
    }


def tensorrt_missing() -> str | None:
    """Why TensorRT cases cannot run, or None when `torch_tensorrt` imports."""
    try:
        import torch_tensorrt  # type: ignore[import-not-found]  # noqa: F401
    except Exception as exc:  # not installed, or built for another torch/CUDA
        return (
            f"torch_tensorrt not importable ({type(exc).__name__}); pip install torch-tensorrt for this torch"
        )
    return None


def run_cuda_tests() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "tests/unit"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return {**summarise_pytest(done.stdout, done.returncode), "tail": done.stdout[-2000:]}


def precision_rows(models: Sequence[str]) -> list[dict[str, Any]]:
    """fp16 vs fp32 on CUDA per model: PSNR between them and against ground truth where known."""
    import numpy as np

    from services.gpu_interp.bench import load_devset, psnr, render
    from services.gpu_interp.engines.models import build_model
    from services.gpu_interp.engines.rife import RifeSettings

    if DEVSET.is_dir():
        triplets = load_devset(DEVSET)
    else:
        triplets = [(render(4.0 * k), render(4.0 * k + 4), render(4.0 * k + 2)) for k in range(6)]
    rows = []
    for name in models:
        outs: dict[str, list[Any]] = {}
        for precision in ("fp32", "fp16"):
            engine = build_model(name, RifeSettings(device="cuda", precision=precision, scale=1.0))
            outs[precision] = [engine.interpolate(a, b) for a, b, _ in triplets]
        rows.append(
            {
                "model": name,
                "frames": f"UCF101 ×{len(triplets)}" if DEVSET.is_dir() else f"generated ×{len(triplets)}",
                "fp16_vs_fp32_db": float(
                    np.mean([psnr(x, y) for x, y in zip(outs["fp16"], outs["fp32"], strict=True)])
                ),
                "fp32_vs_truth_db": float(
                    np.mean([psnr(o, t[2]) for o, t in zip(outs["fp32"], triplets, strict=True)])
                ),
                "fp16_vs_truth_db": float(
                    np.mean([psnr(o, t[2]) for o, t in zip(outs["fp16"], triplets, strict=True)])
                ),
            }
        )
    return rows


def _network(name: str) -> tuple[Any, Callable[[Any, Any], Any]]:
    """The model's network in fp16 on CUDA and a (img0, img1) → middle frame function for it."""
    import torch

    from services.gpu_interp.engines.models import build_model
    from services.gpu_interp.engines.rife import RifeSettings

    engine: Any = build_model(name, RifeSettings(device="cuda", precision="fp16", scale=1.0))
    net = engine.net
    if name == "v4.25":
        half = torch.full((1, 1, 1, 1), 0.5, device="cuda", dtype=torch.float16)

        def middle(a: Any, b: Any) -> Any:
            flow, mask = net.estimate(a, b, half)
            return net.blend(a, b, flow, mask)

    else:

        def middle(a: Any, b: Any) -> Any:
            flow, mask = net.estimate(a, b, (4.0, 2.0, 1.0))
            return net.blend(a, b, flow, mask)

    return net, middle


Runner = Callable[[Any, Any], Any]


def _runner(
    case: Case, shape: tuple[int, int, int, int], cache: dict[tuple[str, str, str], Runner]
) -> Runner:
    """The group's runner, built on its first case: eager, torch.compile with CUDA graphs and a dynamic
    batch dimension, or a TensorRT fp16 engine with a batch 1–8 profile."""
    import torch

    if case.group in cache:
        return cache[case.group]
    net, middle = _network(case.model)
    run: Runner = middle
    if case.backend == "compile":
        run = torch.compile(middle, mode="reduce-overhead")
    elif case.backend == "tensorrt":
        import torch_tensorrt

        class Middle(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: Any, y: Any) -> Any:
                return middle(x, y)

        _, c, h, w = shape
        batches = [(n, c, h, w) for n in (1, 4, max(BATCHES))]
        spec = torch_tensorrt.Input(
            min_shape=batches[0], opt_shape=batches[1], max_shape=batches[2], dtype=torch.float16
        )
        run = torch_tensorrt.compile(
            Middle().eval(), ir="dynamo", inputs=[spec, spec], enabled_precisions={torch.float16}
        )
    cache[case.group] = run
    return run


def measure(case: Case, iterations: int, cache: dict[tuple[str, str, str], Runner]) -> dict[str, Any]:
    """pairs/s of one case: frames padded like the engines pad them, fp16, channels_last."""
    import torch

    height, width = SIZES[case.size]
    multiple = 64 if case.model == "v4.25" else 32
    shape = (case.batch, 3, -(-height // multiple) * multiple, -(-width // multiple) * multiple)
    a = torch.rand(shape, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    b = torch.roll(a, shifts=8, dims=3)
    if case.backend == "compile" and case.group not in cache:
        torch._dynamo.mark_dynamic(a, 0)  # one compiled graph for every batch size
        torch._dynamo.mark_dynamic(b, 0)
    started = time.perf_counter()
    run = _runner(case, shape, cache)
    with torch.inference_mode():
        for _ in range(3):
            run(a, b)
        torch.cuda.synchronize()
        setup = time.perf_counter() - started
        start = time.perf_counter()
        for _ in range(iterations):
            run(a, b)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return {**asdict(case), "pairs_per_s": case.batch * iterations / elapsed, "setup_s": round(setup, 1)}


def pipeline_job(seconds: int) -> dict[str, Any]:
    """One 1080p ×2 job through the running stack; stage timings from the jobs/chunks rows."""
    import asyncio
    import tempfile
    import uuid

    import asyncpg

    from infiniteflow_common.settings import CommonSettings
    from infiniteflow_common.storage import make_client
    from services.supervisor import start_all, wait_ready

    settings = CommonSettings()
    # services already running keep their own settings: stop them first to put the worker on the GPU
    wait_ready(list(start_all(workers=1, env={"DEVICE": "cuda"})))
    clip = Path(tempfile.mkdtemp()) / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size=1920x1080:rate=30:duration={seconds}", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)],
        check=True,
    )  # fmt: skip
    key = f"gpu-check/{uuid.uuid4().hex[:8]}/clip.mp4"
    started = time.time()
    make_client(settings).fput_object(settings.incoming_bucket, key, str(clip), metadata={"multiplier": "2"})

    async def follow() -> dict[str, Any]:
        connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
        try:
            deadline = time.time() + 240
            job = None
            while time.time() < deadline:
                job = await connection.fetchrow("select * from jobs where source_key = $1", key)
                if job and job["status"] in ("completed", "completed_with_warnings", "failed"):
                    break
                await asyncio.sleep(0.5)
            if job is None:
                return {"status": "no job row within 240 s"}
            chunks = await connection.fetch(
                "select started_at, finished_at, interp_seconds from chunks where job_id = $1", job["id"]
            )
        finally:
            await connection.close()
        done = [c for c in chunks if c["finished_at"]]
        last = max((c["finished_at"] for c in done), default=None)
        return {
            "status": job["status"],
            "error": job["error_code"],
            "end_to_end_s": round(
                (job["completed_at"].timestamp() if job["completed_at"] else time.time()) - started, 2
            ),
            "split_s": round((job["split_at"] - job["created_at"]).total_seconds(), 2)
            if job["split_at"]
            else None,
            "interpolate_s": round((last - job["split_at"]).total_seconds(), 2)
            if last and job["split_at"]
            else None,
            "mux_s": round((job["completed_at"] - last).total_seconds(), 2)
            if last and job["completed_at"]
            else None,
            "chunks": len(chunks),
            "engine_seconds": round(sum(c["interp_seconds"] or 0 for c in chunks), 2),
        }

    return asyncio.run(follow())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cases = all_cases(args)
    if args.dry_run:
        budget = args.budget - BEFORE_THROUGHPUT_S - (0 if args.no_pipeline else PIPELINE_RESERVE_S)
        for item in plan(cases, budget, args.iterations):
            print(f"{item.case.label:32s} ~{item.estimate_s:5.0f} s  {item.skip or 'run'}")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; it measures GPU behaviour and ran nothing (try --dry-run)")
        return NO_CUDA_EXIT
    began = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = Report(started_at=stamp)
    folder = args.out or ROOT / "reports" / f"gpu-check-{stamp}"
    steps: list[tuple[str, Callable[[], None]]] = [
        ("machine", lambda: report.machine.update(machine_facts()))
    ]
    if not args.no_tests:
        steps.append(("tests", lambda: report.tests.update(run_cuda_tests())))
    steps.append(("precision", lambda: report.precision.extend(precision_rows(args.models))))
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # recorded; the other steps still run
            report.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:500])
        write_report(report, folder)
    pipeline_reserve = 0.0 if args.no_pipeline else PIPELINE_RESERVE_S
    left = args.budget - (time.perf_counter() - began) - pipeline_reserve
    trt = tensorrt_missing()
    runners: dict[tuple[str, str, str], Runner] = {}
    planned = plan(cases, left, args.iterations, available=lambda b: trt if b == "tensorrt" else None)
    for item in planned:
        if item.skip is not None:
            report.throughput.append(
                {**asdict(item.case), "pairs_per_s": None, "note": f"skipped: {item.skip}"}
            )
            continue
        try:
            report.throughput.append(measure(item.case, args.iterations, runners))
        except Exception as exc:
            report.throughput.append(
                {**asdict(item.case), "pairs_per_s": None, "note": f"failed: {exc}"[:200]}
            )
        finally:
            if all(p.case.group != item.case.group for p in planned[planned.index(item) + 1 :]):
                runners.pop(item.case.group, None)  # the group is done: free its engine and graphs
            torch.cuda.empty_cache()
        write_report(report, folder)
    if not args.no_pipeline:
        try:
            report.pipeline.update(pipeline_job(args.pipeline_seconds))
        except Exception as exc:
            report.errors.append(f"pipeline: {type(exc).__name__}: {exc}"[:500])
    report.seconds = time.perf_counter() - began
    write_report(report, folder)
    print(render_markdown(report))
    print(f"gpu-check report: {folder}")
    return 0 if report.tests.get("ok", True) and not report.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
