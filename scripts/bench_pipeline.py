"""Benchmark the data path (issue 12): the current code against an older commit, in one run.

For each case the services are (re)started with the case's workers and settings (the way
`scripts/capacity.py` does), one clip is dropped in the incoming bucket and, while its job runs, the
job's `work/` prefix is listed and the workers' memory sampled. Measured per job:

* serial seconds per second of video: (split_s + mux_s) / input duration. split_s is
  `split_at − split_started_at` where the code records the start; otherwise the splitter's own
  `infiniteflow_split_seconds` histogram (its sum before and after the job, scraped from :9102);
  mux_s is `jobs.result["mux_seconds"]` for both;
* object-store bytes written to `work/` per output frame: the largest size seen of every object under
  the job's prefix (listed every ~0.5 s while it runs and once after), or `chunks.encoded_bytes`
  summed, whichever is larger, against the final output's bytes per frame;
* `work/` bytes left after the job;
* worker peak RSS: VmHWM of the worker processes at the end, and the largest sampled RSS of a worker
  with its child processes (the ffmpeg decoder and encoder);
* end-to-end latency (upload to `completed_at`).

"before" runs the services of another checkout (default `/work/wt-before`, a `git worktree` of the
commit before the rewrite, with `.venv` and `.run` linked to this one's). Results go to
docs/capacity-pipeline.json and a table between markers in docs/capacity.md, rewritten after every case
so an interrupted run keeps what it measured.

Usage: timeout 3000 flock /tmp/infiniteflow-stack.lock make bench-pipeline
       (.venv/bin/python scripts/bench_pipeline.py [--before DIR] [--skip old tiny 4k rss])
Needs `make up`; hold the stack lock (other sessions share it). Leaves no service running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import asyncpg

from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from infiniteflow_common.storage import make_client
from services.splitter.config import SplitterSettings
from services.splitter.plan import frames_for_work
from services.supervisor import PIDS, stop_all

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capacity import connect, make_clip, start_services, submit_and_wait
from pipeline_latency import union_seconds
from report_section import write_section

DOCS = REPO_ROOT / "docs" / "capacity.md"
JSON_OUT = REPO_ROOT / "docs" / "capacity-pipeline.json"
START, END = "<!-- bench-pipeline:start -->", "<!-- bench-pipeline:end -->"
CLIPS = Path(tempfile.gettempdir()) / "infiniteflow-bench-clips"
SPLIT_METRIC = "http://127.0.0.1:9102/metrics"
MIB = 1024 * 1024


@dataclass
class Case:
    """One job: which code, which clip, which services."""

    name: str
    code: str  # "new" or "old"
    clip: Path
    workers: int
    multiplier: int = 2
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 900


@dataclass
class Result:
    name: str
    code: str
    workers: int
    env: dict[str, str]
    status: str
    error: str | None = None
    end_to_end_s: float | None = None
    input_s: float | None = None
    split_s: float | None = None
    split_source: str | None = None
    mux_s: float | None = None
    serial_per_video_s: float | None = None
    chunks: int | None = None
    chunk_frames: list[int] = field(default_factory=list)
    interpolate_wall_s: float | None = None
    frames_out: int | None = None
    output_bytes: int | None = None
    work_bytes_written: int | None = None
    work_bytes_source: str | None = None
    work_bytes_left: int | None = None
    worker_hwm_mib: float | None = None
    worker_tree_peak_mib: float | None = None


def probe_duration(clip: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(clip)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(out.stdout.strip())


def make_cut_clip(size: str, scenes: tuple[int, int, int]) -> Path:
    """Three scenes (testsrc2, testsrc, testsrc2 negated and mirrored) at 30 fps with AAC audio: two cuts."""
    CLIPS.mkdir(parents=True, exist_ok=True)
    clip = CLIPS / f"cuts-{size}-{'-'.join(map(str, scenes))}.mp4"
    if clip.exists():
        return clip
    a, b, c = scenes
    seconds = sum(scenes) / 30
    partial = clip.with_suffix(".partial.mp4")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
         "-f", "lavfi", "-i", f"testsrc=size={size}:rate=30",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-filter_complex",
         f"[0]trim=end_frame={a},setpts=PTS-STARTPTS[a];[1]trim=end_frame={b},setpts=PTS-STARTPTS[b];"
         f"[2]trim=end_frame={c},setpts=PTS-STARTPTS,negate,hflip[c];[a][b][c]concat=n=3:v=1:a=0[v]",
         "-map", "[v]", "-map", "3:a", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(partial)],
        check=True,
    )  # fmt: skip
    return partial.rename(clip)


def make_main_clip() -> tuple[Path, tuple[int, int, int], int]:
    """The 1080p clip of the main case: (clip, its scenes' frame counts, the default chunk's frames at ×2).

    10 s in all; the first scene is long enough for one chunk of 4× the default length.
    """
    splitter = SplitterSettings()
    default_chunk = frames_for_work(
        width=1920, height=1080, in_rate=Fraction(30), out_rate=Fraction(60),
        engine_pixels_per_s=splitter.engine_mpix_per_s["flow"] * 1e6, target_s=splitter.chunk_target_s,
        min_frames=splitter.chunk_min_frames, max_frames=splitter.chunk_max_frames,
    )  # fmt: skip
    first = 4 * default_chunk
    rest = max(30, (300 - first) // 2)
    scenes = (first, rest, rest)
    return make_cut_clip("1920x1080", scenes), scenes, default_chunk


def split_metric_sum() -> float | None:
    """The splitter's `infiniteflow_split_seconds_sum`, or None when it does not answer."""
    try:
        with urllib.request.urlopen(SPLIT_METRIC, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    found = re.search(r"^infiniteflow_split_seconds_sum (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def worker_pids() -> list[int]:
    return [int(p.read_text()) for p in sorted(PIDS.glob("gpu_interp-*.pid"))]


def status_kib(pid: int, field_name: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def descendants(pid: int) -> list[int]:
    """Child processes of `pid`, recursively (from each process's parent id in /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


class Sampler:
    """What a job writes under `work/{job}/` and how much memory each worker uses, sampled while it runs."""

    def __init__(self, settings: CommonSettings) -> None:
        self.settings = settings
        self.client = make_client(settings)
        self.sizes: dict[str, int] = {}
        self.tree_peak_kib = 0
        self.job_id: str | None = None
        self.last_list = 0.0

    def list_work(self) -> int:
        assert self.job_id is not None
        total = 0
        for obj in self.client.list_objects(
            self.settings.work_bucket, prefix=f"{self.job_id}/", recursive=True
        ):
            name = str(obj.object_name)
            self.sizes[name] = max(self.sizes.get(name, 0), obj.size or 0)
            total += obj.size or 0
        return total

    def __call__(self, job: asyncpg.Record | None) -> None:
        for pid in worker_pids():
            tree = sum(status_kib(p, "VmRSS") for p in [pid, *descendants(pid)])
            self.tree_peak_kib = max(self.tree_peak_kib, tree)
        if job is None:
            return
        self.job_id = str(job["id"])
        if time.monotonic() - self.last_list >= 0.5:
            self.last_list = time.monotonic()
            self.list_work()


async def run_case(settings: CommonSettings, case: Case, before: Path) -> Result:
    result = Result(name=case.name, code=case.code, workers=case.workers, env=case.env, status="not run")
    start_services(case.workers, case.env, root=before if case.code == "old" else None)
    await asyncio.sleep(5)  # every worker assigned before the clock starts
    sampler = Sampler(settings)
    split_before = split_metric_sum()
    connection = await connect(settings)
    try:
        job, started = await submit_and_wait(
            settings,
            connection,
            case.clip,
            {"multiplier": str(case.multiplier), "engine": "flow"},
            timeout_s=case.timeout_s,
            poll=sampler,
        )
        chunks = await connection.fetch(
            "select * from chunks where job_id = $1 order by chunk_index", job["id"]
        )
    finally:
        await connection.close()
    split_after = split_metric_sum()
    result.worker_hwm_mib = round(max((status_kib(p, "VmHWM") for p in worker_pids()), default=0) / 1024, 1)
    result.worker_tree_peak_mib = round(sampler.tree_peak_kib / 1024, 1)
    job_id = str(job["id"])
    sampler.job_id = job_id
    left = sampler.list_work()
    raw = job["result"]
    report: dict[str, Any] = (json.loads(raw) if isinstance(raw, str) else raw) or {}
    result.status = str(job["status"])
    result.error = job.get("error_message") or job.get("error_code")
    result.input_s = round(probe_duration(case.clip), 3)
    if job["completed_at"]:
        result.end_to_end_s = round(job["completed_at"].timestamp() - started, 2)
    if job.get("split_started_at") and job.get("split_at"):
        result.split_s = round((job["split_at"] - job["split_started_at"]).total_seconds(), 3)
        result.split_source = "split_at − split_started_at"
    elif split_before is not None and split_after is not None:
        result.split_s = round(split_after - split_before, 3)
        result.split_source = "splitter's infiniteflow_split_seconds"
    if "mux_seconds" in report:
        result.mux_s = float(report["mux_seconds"])
    if result.split_s is not None and result.mux_s is not None:
        result.serial_per_video_s = round((result.split_s + result.mux_s) / result.input_s, 3)
    result.chunks = len(chunks)
    result.chunk_frames = [int(c["frame_count"]) for c in chunks]
    done = [(c["started_at"], c["finished_at"]) for c in chunks if c["started_at"] and c["finished_at"]]
    result.interpolate_wall_s = round(union_seconds(done), 2) if done else None
    result.frames_out = sum(c["frames_out"] or 0 for c in chunks)
    result.output_bytes = sum(
        o.size or 0
        for o in make_client(settings).list_objects(
            settings.output_bucket, prefix=f"{job_id}/", recursive=True
        )
    )
    polled = sum(sampler.sizes.values())
    encoded = sum(c.get("encoded_bytes") or 0 for c in chunks)
    result.work_bytes_written = max(polled, encoded)
    result.work_bytes_source = "chunks.encoded_bytes" if encoded >= polled else "work/ listings"
    result.work_bytes_left = left
    return result


def ratio(new: float | None, old: float | None) -> str:
    if new is None or old is None or old == 0:
        return "—"
    return f"{new / old:.2f}×" if new else "0"


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}{unit}"


def per_frame(result: Result | None, attr: str) -> float | None:
    if result is None or not result.frames_out:
        return None
    value = getattr(result, attr)
    return None if value is None else value / result.frames_out / 1000


def render(results: dict[str, Result], meta: dict[str, Any]) -> str:
    def get(name: str) -> Result | None:
        return results.get(name)

    def row(label: str, old: float | None, new: float | None, unit: str = "", digits: int = 2) -> str:
        return f"| {label} | {fmt(old, unit, digits)} | {fmt(new, unit, digits)} | {ratio(new, old)} |"

    def attr(name: str, key: str) -> float | None:
        r = get(name)
        return None if r is None else getattr(r, key)

    old, new = get("old-main"), get("new-main")
    lines = [
        START,
        f"## Data path before and after (`make bench-pipeline`, {meta['when']})",
        "",
        f"Measured in one run of `scripts/bench_pipeline.py` on this machine (2 shared cores): *before* is "
        f"commit {meta['before_commit']} (FFV1 chunks, one muxer encoding everything), *after* is "
        f"{meta['after_commit']}. Ratios are after / before; single runs on a shared machine, so expect "
        "±10–20 % noise on times.",
        "",
        f"Main clip: {meta['main_clip']} — 1920×1080, 30 fps, {fmt(attr('new-main', 'input_s'), ' s', 1)}, "
        "AAC audio, two scene cuts, ×2, flow engine, 2 workers, `ENGINE_THREADS=1`.",
        "",
        "| 1080p clip ×2, 2 workers | before | after | after / before |",
        "|---|---|---|---|",
        row(
            "split_s (wall seconds of the split)",
            attr("old-main", "split_s"),
            attr("new-main", "split_s"),
            " s",
        ),
        row("mux_s (`result.mux_seconds`)", attr("old-main", "mux_s"), attr("new-main", "mux_s"), " s"),
        row(
            "**serial s per s of video** (target ≤ 0.5)",
            attr("old-main", "serial_per_video_s"),
            attr("new-main", "serial_per_video_s"),
            "",
            3,
        ),
        row("chunks", attr("old-main", "chunks"), attr("new-main", "chunks"), "", 0),
        row("output frames", attr("old-main", "frames_out"), attr("new-main", "frames_out"), "", 0),
        row(
            "work/ KB written per output frame",
            per_frame(old, "work_bytes_written"),
            per_frame(new, "work_bytes_written"),
            " KB",
            1,
        ),
        row(
            "final output KB per frame",
            per_frame(old, "output_bytes"),
            per_frame(new, "output_bytes"),
            " KB",
            1,
        ),
        row(
            "work/ written ÷ output (target ≤ 2)",
            None if not old or not old.output_bytes else (old.work_bytes_written or 0) / old.output_bytes,
            None if not new or not new.output_bytes else (new.work_bytes_written or 0) / new.output_bytes,
        ),
        row(
            "work/ MB left after the job (target 0)",
            None if not old or old.work_bytes_left is None else old.work_bytes_left / 1e6,
            None if not new or new.work_bytes_left is None else new.work_bytes_left / 1e6,
            " MB",
            1,
        ),
        row(
            "end to end, 2 workers",
            attr("old-main", "end_to_end_s"),
            attr("new-main", "end_to_end_s"),
            " s",
            1,
        ),
        row("end to end, 1 worker", attr("old-1w", "end_to_end_s"), attr("new-1w", "end_to_end_s"), " s", 1),
        row(
            "worker peak RSS, default chunk (VmHWM)",
            attr("old-1w", "worker_hwm_mib"),
            attr("new-1w", "worker_hwm_mib"),
            " MiB",
            0,
        ),
        row(
            "worker + its ffmpeg children, sampled peak",
            attr("old-1w", "worker_tree_peak_mib"),
            attr("new-1w", "worker_tree_peak_mib"),
            " MiB",
            0,
        ),
        "",
        f"split_s before: {attr('old-main', 'split_source') or '—'}; after: "
        f"{attr('new-main', 'split_source') or '—'}. work/ bytes before: {attr('old-main', 'work_bytes_source') or '—'}"
        f" (FFV1 `chunks/` and `interp/`, never deleted); after: {attr('new-main', 'work_bytes_source') or '—'} "
        "(encoded `out/` chunks, deleted when the job ends).",
        "",
        "Memory and long clips (after only unless a figure is given for before):",
        "",
        "| case | end to end | split_s | mux_s | chunks | worker VmHWM | worker + children, sampled peak |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {
        "new-1w": f"1080p ×2, 1 worker, default chunk ({meta['default_chunk']} frames)",
        "new-rss4x": f"1080p ×2, 1 worker, `CHUNK_FRAMES={4 * meta['default_chunk']}` (4×)",
        "old-1w": "before: 1080p ×2, 1 worker, 48-frame chunks (its default)",
        "new-4k": "4K ×8, 0.3 s, 1 worker, `CHUNK_FRAMES=8`",
        "new-tiny": "16×16, 2 h, ×2, 2 workers",
    }
    for name, label in labels.items():
        r = get(name)
        if r is None:
            lines.append(f"| {label} | not measured | | | | | |")
            continue
        state = (
            "" if r.status.startswith("completed") else f" ({r.status}{': ' + r.error if r.error else ''})"
        )
        lines.append(
            f"| {label} | {fmt(r.end_to_end_s, ' s', 1)}{state} | {fmt(r.split_s, ' s', 1)} | {fmt(r.mux_s, ' s', 1)} | "
            f"{fmt(r.chunks, '', 0)} | "
            f"{fmt(r.worker_hwm_mib, ' MiB', 0)} | {fmt(r.worker_tree_peak_mib, ' MiB', 0)} |"
        )
    one, four = get("new-1w"), get("new-rss4x")
    if one and four and one.worker_tree_peak_mib and four.worker_tree_peak_mib and one.worker_hwm_mib:
        lines += [
            "",
            f"4× chunk length vs 1×: VmHWM {ratio(four.worker_hwm_mib, one.worker_hwm_mib)}, worker with children "
            f"{ratio(four.worker_tree_peak_mib, one.worker_tree_peak_mib)} (target within 10 %).",
        ]
    if meta.get("failures"):
        lines += ["", "Failed in this run: " + "; ".join(meta["failures"]) + "."]
    lines += [
        "",
        f"Command: `{meta['command']}`. Raw figures: `docs/capacity-pipeline.json`.",
        END,
    ]
    return "\n".join(lines)


def write(results: dict[str, Result], meta: dict[str, Any]) -> None:
    JSON_OUT.write_text(
        json.dumps({"meta": meta, "runs": {k: asdict(v) for k, v in results.items()}}, indent=2) + "\n"
    )
    write_section(DOCS, START, END, render(results, meta))


def git_commit(root: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "?"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--before", type=Path, default=Path("/work/wt-before"), help="checkout of the old code"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["old", "tiny", "4k", "rss", "1w"])
    parser.add_argument("--tiny-hours", type=float, default=2.0)
    args = parser.parse_args()
    settings = CommonSettings()
    if "old" not in args.skip and not (args.before / "services").is_dir():
        parser.error(
            f"{args.before} is not a checkout; git worktree add {args.before} <commit>, link .venv and .run"
        )
    main_clip, (first, rest, _), default_chunk = make_main_clip()
    one = {"ENGINE_THREADS": "1"}
    cases = [
        Case("old-main", "old", main_clip, 2, env=one),
        Case("new-main", "new", main_clip, 2, env=one),
        Case("new-1w", "new", main_clip, 1, env=one),
        Case("old-1w", "old", main_clip, 1, env=one),
        Case("new-rss4x", "new", main_clip, 1, env=one | {"CHUNK_FRAMES": str(4 * default_chunk)}),
        Case("new-4k", "new", make_clip("3840x2160", 0.3, CLIPS), 1, multiplier=8, env={"CHUNK_FRAMES": "8"}),
    ]
    if "tiny" not in args.skip:
        tiny = make_clip("16x16", args.tiny_hours * 3600, CLIPS)
        cases.append(Case("new-tiny", "new", tiny, 2, env=one, timeout_s=1500))
    skip = set(args.skip)
    cases = [
        c
        for c in cases
        if not (
            (c.code == "old" and "old" in skip)
            or (c.name == "new-4k" and "4k" in skip)
            or (c.name == "new-rss4x" and "rss" in skip)
            or (c.name.endswith("-1w") and "1w" in skip)
        )
    ]
    meta: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "before_commit": git_commit(args.before) if "old" not in skip else "—",
        "after_commit": git_commit(REPO_ROOT),
        "main_clip": f"scenes of {first}, {rest}, {rest} frames",
        "default_chunk": default_chunk,
        "command": "timeout 3000 flock /tmp/infiniteflow-stack.lock make bench-pipeline",
        "argv": sys.argv[1:],
        "failures": [],
    }
    results: dict[str, Result] = {}
    try:
        for case in cases:
            print(f"== {case.name}: {case.code} code, {case.workers} worker(s), {case.env}", flush=True)
            try:
                results[case.name] = await run_case(settings, case, args.before)
            except Exception as error:  # one failed case leaves the others' figures
                meta["failures"].append(f"{case.name}: {type(error).__name__}: {error}")
                print(f"   failed: {error}", flush=True)
            else:
                print("  ", json.dumps(asdict(results[case.name])), flush=True)
            finally:
                stop_all()
            write(results, meta)
    finally:
        stop_all()
    print(render(results, meta))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
