"""Benchmark planning that streams (issue 23, item 4): how soon a long upload's first chunk is announced,
and whether a long upload's planning delays a small one, before and after, in one run.

The services run twice, with no worker (planning alone is measured; every job is cancelled once its
figure is taken): *before* is `STREAM_CHUNKS=false MAX_CONCURRENT_SPLITS=1` (every chunk after the
whole pass, one split at a time: the splitter before this issue), *after* the defaults (chunks
announced while the pass runs, two splits side by side). Same code, same clips. Cases:

e. a 30-minute 1080p upload: seconds from the upload landing (its PUT returned) to its first chunk
   announced (the first chunk row: they are written just before their records), and the pass itself;
f. a 2-hour 16×16 upload, then 5 s later a small one (320×240, 4 s): seconds from the small upload
   landing to its plan being complete (`split_at`).

Clips are made once and kept in ~/.cache/infiniteflow/bench/. Results go to docs/capacity-planning.json
and a table between markers in docs/capacity.md.

Usage: timeout 3000 flock /tmp/infiniteflow-stack.lock make bench-planning
Needs `make up`; hold the stack lock (other sessions share it). Leaves no service running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from infiniteflow_common.storage import make_client
from services.supervisor import stop_all

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import git_commit
from capacity import connect, drop_clip, start_services
from report_section import write_section

DOCS = REPO_ROOT / "docs" / "capacity.md"
JSON_OUT = REPO_ROOT / "docs" / "capacity-planning.json"
START, END = "<!-- bench-planning:start -->", "<!-- bench-planning:end -->"
CACHE = Path.home() / ".cache" / "infiniteflow" / "bench"
MODES = {
    "before": {"STREAM_CHUNKS": "false", "MAX_CONCURRENT_SPLITS": "1"},
    # the defaults but ingest and the muxer download an object in one GET stream, as before ranged reads
    "one_stream": {"DOWNLOAD_STREAMS": "1"},
    "after": {},
}


def clip(name: str, source: str, seconds: int, codec_args: list[str], repeat: int = 1) -> Path:
    """A cached H.264 clip made from an FFmpeg test source (`repeat` copies of it back to back, joined
    by stream copy: a long clip for the price of encoding a part of it)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.mp4"
    if path.exists():
        return path
    part = path.with_suffix(".part.mp4")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"{source}:duration={seconds // repeat}",
         "-f", "lavfi", "-i", f"sine=duration={seconds // repeat}", "-c:v", "libx264", *codec_args,
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(part)],
        check=True,
    )  # fmt: skip
    listing = path.with_suffix(".txt")
    listing.write_text(f"file '{part}'\n" * repeat, encoding="utf-8")
    partial = path.with_suffix(".partial.mp4")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
         "-c", "copy", str(partial)],
        check=True,
    )  # fmt: skip
    part.unlink()
    listing.unlink()
    return partial.rename(path)


async def job_of(connection: asyncpg.Connection, key: str, timeout_s: float) -> asyncpg.Record:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = await connection.fetchrow("select * from jobs where source_key = $1", key)
        if job is not None:
            return job
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no job for {key}")


async def first_chunk_at(connection: asyncpg.Connection, job_id: Any, timeout_s: float) -> float:
    """Epoch seconds of the job's first chunk row."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = await connection.fetchval("select min(created_at) from chunks where job_id = $1", job_id)
        if found is not None:
            return float(found.timestamp())
        job = await connection.fetchrow("select status, error_message from jobs where id = $1", job_id)
        if job and job["status"] == "failed":
            raise RuntimeError(f"job {job_id} failed: {job['error_message']}")
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no chunk of {job_id} within {timeout_s} s")


async def split_done_at(connection: asyncpg.Connection, job_id: Any, timeout_s: float) -> float:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = await connection.fetchrow(
            "select split_at, status, error_message from jobs where id = $1", job_id
        )
        if job and job["split_at"] is not None:
            return float(job["split_at"].timestamp())
        if job and job["status"] == "failed":
            raise RuntimeError(f"job {job_id} failed: {job['error_message']}")
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{job_id} not split within {timeout_s} s")


async def cancel(connection: asyncpg.Connection, *job_ids: Any) -> None:
    """Cancel through the CLI, as a user would (the pass of a job still splitting stops)."""
    for job_id in job_ids:
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", "from services.cli import main; main()", "cancel", str(job_id)],
            cwd=REPO_ROOT,
            capture_output=True,
            check=False,
            timeout=60,
        )
    await asyncio.sleep(1)


async def case_e(
    settings: CommonSettings, connection: asyncpg.Connection, long_1080p: Path
) -> dict[str, Any]:
    key, _ = drop_clip(settings, long_1080p, {"engine": "flow"}, prefix="bench-planning/")
    landed = time.time()  # drop_clip returns the PUT's start; the upload has landed now
    job = await job_of(connection, key, 120)
    first = await first_chunk_at(connection, job["id"], 3600)
    figures = {"first_chunk_s": round(first - landed, 2)}
    split = await connection.fetchrow("select split_started_at from jobs where id = $1", job["id"])
    if split and split["split_started_at"]:
        figures["upload_to_split_start_s"] = round(split["split_started_at"].timestamp() - landed, 2)
    await cancel(connection, job["id"])
    return figures


async def case_f(
    settings: CommonSettings, connection: asyncpg.Connection, long_tiny: Path, small: Path
) -> dict[str, Any]:
    long_key, _ = drop_clip(settings, long_tiny, {"engine": "flow"}, prefix="bench-planning/")
    long_job = await job_of(connection, long_key, 120)
    await asyncio.sleep(5)
    small_key, _ = drop_clip(settings, small, {"engine": "flow"}, prefix="bench-planning/")
    landed = time.time()
    small_job = await job_of(connection, small_key, 120)
    done = await split_done_at(connection, small_job["id"], 3600)
    long_split = await connection.fetchrow("select split_at from jobs where id = $1", long_job["id"])
    figures = {
        "small_split_s": round(done - landed, 2),
        "long_still_splitting": bool(long_split and long_split["split_at"] is None),
    }
    await cancel(connection, long_job["id"], small_job["id"])
    return figures


async def forget_jobs(settings: CommonSettings, connection: asyncpg.Connection) -> None:
    """Remove the run's jobs (their chunks go with them) and uploads."""
    await connection.execute("delete from jobs where source_key like 'bench-planning/%'")
    storage = make_client(settings)
    for found in storage.list_objects(settings.incoming_bucket, prefix="bench-planning/", recursive=True):
        if found.object_name:
            storage.remove_object(settings.incoming_bucket, found.object_name)


def render(run: dict[str, Any]) -> str:
    before, one_stream, after = run["before"], run.get("one_stream", {}), run["after"]

    def seconds(value: Any) -> str:
        return "—" if value is None else f"{value} s"

    def ratio(new: Any, old: Any) -> str:
        numbers = isinstance(old, (int, float)) and isinstance(new, (int, float)) and old
        return f"{new / old:.3f}×" if numbers else "—"

    def row(label: str, case: str, field: str, target: str) -> str:
        old, single, new = (mode.get(case, {}).get(field) for mode in (before, one_stream, after))
        return (
            f"| {label} | {seconds(old)} | {seconds(single)} | {seconds(new)} | {ratio(new, old)} | "
            f"{ratio(new, single)} | {target} |"
        )

    return "\n".join(
        [
            START,
            "## Planning that streams (`make bench-planning`)",
            "",
            f"Run of `make bench-planning` at {run['commit']} on {run['when']} (no worker; planning only). "
            "*before*: `STREAM_CHUNKS=false MAX_CONCURRENT_SPLITS=1` (every chunk after the whole pass, "
            "one split at a time); *one stream*: the defaults but `DOWNLOAD_STREAMS=1` (ingest downloads "
            "the upload in one GET stream); *after*: the defaults (two ranged GETs side by side).",
            "",
            "| case | before | one stream | after | after ÷ before | after ÷ one stream | target |",
            "|---|---|---|---|---|---|---|",
            row("e. 30-min 1080p upload landed → first chunk announced", "e", "first_chunk_s", "≤ 10 s"),
            row(
                "f. small upload landed → planned, behind a 2-hour 16×16 upload",
                "f",
                "small_split_s",
                "not delayed",
            ),
            "",
            f"f: the 2-hour upload was still being planned when the small one's plan was complete: "
            f"before {before.get('f', {}).get('long_still_splitting', '—')}, "
            f"after {after.get('f', {}).get('long_still_splitting', '—')}. "
            f"Clips: {run['clips']}. e, after: {after.get('e', {}).get('upload_to_split_start_s', '—')} s of "
            "the wait pass before the split starts (MinIO's event, ingest's download and probe of the upload); "
            "the rest is the splitter's start: its HDR probe and the first frames of the pass, read over a presigned URL.",
            END,
        ]
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=int, default=30, help="length of case e's 1080p upload")
    args = parser.parse_args()
    settings = CommonSettings()
    # 6 Mb/s, a phone's 1080p (the upload limit is 2 GiB): 1.35 GB for 30 minutes
    long_1080p = clip(f"testsrc2-1080p-{args.minutes}min-6M", "testsrc2=size=1920x1080:rate=30", args.minutes * 60,
                      ["-preset", "ultrafast", "-b:v", "6M", "-maxrate", "8M", "-bufsize", "12M", "-g", "60"],
                      repeat=3)  # fmt: skip
    long_tiny = clip("testsrc2-16x16-2h", "testsrc2=size=16x16:rate=30", 7200, ["-preset", "veryfast"])
    small = clip("testsrc2-320x240-4s", "testsrc2=size=320x240:rate=30", 4, [])
    run: dict[str, Any] = {
        "commit": git_commit(REPO_ROOT),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "clips": f"{long_1080p.name} ({long_1080p.stat().st_size / 1e6:.0f} MB), {long_tiny.name}, {small.name}",
    }
    connection = await connect(settings)
    try:
        for mode, env in MODES.items():
            print(f"== {mode}: {env}", flush=True)
            start_services(0, env)
            run[mode] = {}
            run[mode]["e"] = await case_e(settings, connection, long_1080p)
            print(mode, "e", run[mode]["e"], flush=True)
            run[mode]["f"] = await case_f(settings, connection, long_tiny, small)
            print(mode, "f", run[mode]["f"], flush=True)
            stop_all()
    finally:
        stop_all()
        await forget_jobs(settings, connection)
        await connection.close()
    JSON_OUT.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    write_section(DOCS, START, END, render(run))
    print(render(run))


if __name__ == "__main__":
    asyncio.run(main())
