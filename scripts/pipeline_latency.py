"""End-to-end latency of one job through the running services, and the share spent outside interpolation.

Usage: .venv/bin/python scripts/pipeline_latency.py [--engine rife|flow] [--seconds 10] [--size 640x360]
Needs `make up`; starts the services (2 workers) if they are not running. Prints a markdown row.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from services.supervisor import start_all, wait_ready


def union_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    """Wall time covered by at least one interval (parallel chunks count once)."""
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return total


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default="rife")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--size", default="640x360")
    args = parser.parse_args()
    settings = CommonSettings()
    wait_ready(list(start_all(workers=2)))
    clip = Path(tempfile.mkdtemp()) / "clip.mp4"
    subprocess.run(  # noqa: ASYNC221 - setup before the clock starts
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={args.size}:rate=30:duration={args.seconds}",
         "-f", "lavfi", "-i", f"sine=duration={args.seconds}", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip)],
        check=True,
    )  # fmt: skip
    key = f"bench/{uuid.uuid4().hex[:8]}/clip.mp4"
    started = time.time()
    make_client(settings).fput_object(
        settings.incoming_bucket, key, str(clip), metadata={"multiplier": "2", "engine": args.engine}
    )
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        while True:
            job = await connection.fetchrow("select * from jobs where source_key = $1", key)
            if job and job["status"] in ("completed", "completed_with_warnings", "failed", "cancelled"):
                break
            await asyncio.sleep(0.2)
        chunks = await connection.fetch(
            "select started_at, finished_at, interp_seconds from chunks where job_id = $1", job["id"]
        )
    finally:
        await connection.close()
    finished = job["completed_at"].timestamp() if job["completed_at"] else time.time()
    latency = finished - started
    interp_wall = union_seconds([(c["started_at"], c["finished_at"]) for c in chunks if c["finished_at"]])
    engine_seconds = sum(c["interp_seconds"] or 0 for c in chunks)
    print(
        f"| {args.engine} | {args.size} {args.seconds}s 30fps ×2 | {job['status']} | {latency:.1f} s | "
        f"{len(chunks)} | {engine_seconds:.1f} s | {interp_wall:.1f} s | {1 - interp_wall / latency:.0%} |"
    )


if __name__ == "__main__":
    asyncio.run(main())
