"""Load: N concurrent small jobs, half bucket drops and half API uploads; all must complete.

Usage: .venv/bin/python scripts/load_test.py [--jobs 20] [--kill-worker-after 0.5]
Needs `make up`; starts the services (2 workers) when not running. With --kill-worker-after F, one
gpu_interp worker is SIGKILLed once that fraction of the jobs has completed (the supervisor does not
restart it). Prints throughput and latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from services.supervisor import PIDS, start_all, wait_ready


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--kill-worker-after", type=float, default=None)
    args = parser.parse_args()
    settings = CommonSettings()
    wait_ready(list(start_all(workers=2)))
    clip = Path(tempfile.mkdtemp()) / "clip.mp4"
    subprocess.run(  # noqa: ASYNC221 - setup before the clock starts
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=30:duration=1",
         "-f", "lavfi", "-i", "sine=duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip)],
        check=True,
    )  # fmt: skip
    storage = make_client(settings)
    submitted: dict[str, float] = {}
    started = time.monotonic()

    async def submit(index: int, client: httpx.AsyncClient) -> None:
        if index % 2:
            key = f"load/{uuid.uuid4().hex}/clip.mp4"
            await asyncio.to_thread(
                storage.fput_object, settings.incoming_bucket, key, str(clip), metadata={"engine": "flow"}
            )
            submitted[f"key:{key}"] = time.monotonic()
        else:
            with clip.open("rb") as file:
                response = await client.post(
                    "/api/upload", files={"file": ("clip.mp4", file)}, data={"engine": "flow"}
                )
            response.raise_for_status()
            submitted[f"id:{response.json()['job_id']}"] = time.monotonic()

    async with httpx.AsyncClient(base_url=settings.api_url, timeout=60) as client:
        await asyncio.gather(*(submit(i, client) for i in range(args.jobs)))
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    done: dict[str, float] = {}
    killed = False
    try:
        while len(done) < args.jobs and time.monotonic() - started < 900:
            for ref in submitted:
                if ref in done:
                    continue
                kind, value = ref.split(":", 1)
                column = "source_key" if kind == "key" else "id::text"
                row = await connection.fetchrow(f"select status from jobs where {column} = $1", value)  # noqa: S608 - fixed column names
                if row and row["status"] in ("completed", "completed_with_warnings", "failed", "cancelled"):
                    done[ref] = time.monotonic()
                    if row["status"] == "failed":
                        print("FAILED", ref)
            if (
                args.kill_worker_after is not None
                and not killed
                and len(done) >= args.jobs * args.kill_worker_after
            ):
                pid = int((PIDS / "gpu_interp-1.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                killed = True
                print(f"killed gpu_interp-1 (pid {pid}) after {len(done)} jobs")
            await asyncio.sleep(0.2)
        ids = [await connection.fetchval(
            "select id::text from jobs where source_key = $1 or id::text = $1", ref.split(":", 1)[1]
        ) for ref in submitted]  # fmt: skip
        statuses = await connection.fetch(
            "select status, count(*) from jobs where id::text = any($1::text[]) group by status", ids
        )
    finally:
        await connection.close()
    latencies = sorted(done[ref] - submitted[ref] for ref in done)
    wall = max(done.values()) - started
    print(f"jobs {len(done)}/{args.jobs} final in {wall:.1f} s → {len(done) / wall * 60:.1f} jobs/min")
    print(
        f"latency p50 {statistics.median(latencies):.1f} s, p95 {latencies[int(0.95 * (len(latencies) - 1))]:.1f} s, max {latencies[-1]:.1f} s"
    )
    print("statuses of this run's jobs:", {r["status"]: r["count"] for r in statuses})


if __name__ == "__main__":
    asyncio.run(main())
