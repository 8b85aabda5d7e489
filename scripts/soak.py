"""Soak (issue 13): 20 mixed jobs while a chaos loop SIGKILLs a random service every ~20 s.

The services run in the background as `make demo` runs them (`services.supervisor`); this script is
also their supervisor: a service that dies is started again within a second, as a container runtime
would. Jobs are dropped in the incoming bucket over the first minutes: valid clips of several sizes and
options, two hostile files, one source deleted while its job runs, and one 4K ×8 job on workers whose
memory is capped (`SIMULATED_MEMORY_PIXELS`, so its chunks step down). Chaos runs for `--chaos-s`
seconds, then the jobs are left to finish. Afterwards the soak checks:

* every job is final — completed, or failed with an error code (the hostile files and the deleted
  source must fail, with the codes that say why; every valid clip must complete);
* no service crash-loops: each one stays up, unrestarted, for `--settle-s` seconds after chaos ends;
* no record sits uncommitted: every pipeline consumer group has zero lag on its topics;
* every job's webhook (job.completed or job.failed) arrived, one webhook-id per job; repeated
  deliveries of that id (at-least-once after a notifier kill) are counted, not hidden.

The table goes between markers in docs/operating.md, the raw figures to docs/soak.json.
Usage: timeout 2400 flock /tmp/infiniteflow-stack.lock make soak   (needs `make up`; leaves no service)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from infiniteflow_common.storage import make_client
from services.supervisor import _alive, _running, start_all, stop_all, wait_ready

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capacity import FINAL, connect, make_clip

DOCS = REPO_ROOT / "docs" / "operating.md"
JSON_OUT = REPO_ROOT / "docs" / "soak.json"
START, END = "<!-- soak:start -->", "<!-- soak:end -->"
CLIPS = Path(tempfile.gettempdir()) / "infiniteflow-soak-clips"
WORKERS = 2
# A 4K pair at full scale is 8.3 MPix: the capped workers step a 4K chunk down (scale, then batch);
# every other job here stays under it.
SERVICE_ENV = {"SIMULATED_MEMORY_PIXELS": str(3840 * 2160)}
GROUPS = {
    "ingest": ["minio.events"],
    "splitter": ["video.uploaded"],
    "gpu_interp": ["chunk.ready"],
    "muxer": ["chunk.interpolated", "job.split"],
    "notifier": ["job.completed", "job.failed", "job.cancelled"],
}


@dataclass
class Submission:
    """One job of the soak and what it must end as."""

    name: str
    clip: Path
    metadata: dict[str, str]
    expect: str  # "completed", or the error code (or code prefix, e.g. "E_PROBE_") the job must fail with
    delete_mid_job: bool = False
    key: str = ""
    job_id: str | None = None
    status: str | None = None
    error_code: str | None = None
    seconds: float | None = None
    webhook_ids: list[str] = field(default_factory=list)
    deliveries: int = 0

    @property
    def ok(self) -> bool:
        """The job ended as expected and announced itself once."""
        ended = self.status in ("completed", "completed_with_warnings")
        right = ended if self.expect == "completed" else (self.error_code or "").startswith(self.expect)
        return right and len(set(self.webhook_ids)) == 1


class Receiver:
    """A local webhook endpoint: every delivery, by job."""

    def __init__(self) -> None:
        self.by_job: dict[str, list[str]] = {}
        received = self.by_job

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                job = str(body.get("data", {}).get("job_id"))
                received.setdefault(job, []).append(self.headers.get("webhook-id", ""))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/soak"


def hostile_files() -> tuple[Path, Path]:
    """Random bytes named .mp4, and a valid clip cut off after a third of its bytes."""
    garbage = CLIPS / "garbage.mp4"
    garbage.write_bytes(random.Random(7).randbytes(200_000))
    whole = make_clip("320x180", 3, CLIPS).read_bytes()
    truncated = CLIPS / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 3])
    return garbage, truncated


def submissions(hook: str) -> list[Submission]:
    """The 20 jobs: 16 valid (sizes, multipliers, a target rate, dedupe, codecs), 2 hostile, 1 deleted, 1 4K ×8."""
    flow = {"engine": "flow", "webhook-url": hook}
    valid = [
        ("160x96", 1, {"multiplier": "2"}),
        ("160x96", 2, {"multiplier": "8"}),
        ("320x180", 2, {"multiplier": "2"}),
        ("320x180", 2, {"multiplier": "4"}),
        ("320x180", 3, {"target-fps": "50"}),
        ("320x180", 2, {"multiplier": "2", "dedupe": "true"}),
        ("320x180", 2, {"multiplier": "2", "codec": "h265"}),
        ("640x360", 2, {"multiplier": "2"}),
        ("640x360", 2, {"multiplier": "4"}),
        ("640x360", 3, {"multiplier": "2", "crf": "20"}),
        ("1280x720", 1, {"multiplier": "2"}),
        ("1280x720", 1, {"target-fps": "60000/1001"}),
        ("160x96", 4, {"multiplier": "2"}),
        ("320x180", 1, {"multiplier": "8"}),
        ("640x360", 1, {"multiplier": "2", "codec": "source"}),
        ("1920x1080", 1, {"multiplier": "2"}),
    ]
    jobs = [
        Submission(f"{size} {secs}s {options}", make_clip(size, secs, CLIPS), flow | options, "completed")
        for size, secs, options in valid
    ]
    garbage, truncated = hostile_files()
    jobs.insert(3, Submission("random bytes", garbage, flow | {"multiplier": "2"}, "E_PROBE_"))
    jobs.insert(9, Submission("truncated mp4", truncated, flow | {"multiplier": "2"}, "E_PROBE_"))
    deleted = Submission(
        "640x360 6s, source deleted mid-job",
        make_clip("640x360", 6, CLIPS),
        flow | {"multiplier": "4"},
        "E_SOURCE_GONE",
        delete_mid_job=True,
    )
    jobs.insert(6, deleted)
    jobs.insert(12, Submission("3840x2160 0.2s ×8, memory capped", make_clip("3840x2160", 0.2, CLIPS),
                               flow | {"multiplier": "8"}, "completed"))  # fmt: skip
    return jobs


class Chaos:
    """Restarts dead services every second; during chaos, SIGKILLs a random one every 15–25 s."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.kills: list[tuple[float, str]] = []
        self.restarts: dict[str, int] = {}
        self.chaos_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, chaos_s: float) -> None:
        self.chaos_until = time.monotonic() + chaos_s
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        next_kill = time.monotonic() + self.rng.uniform(15, 25)
        while not self._stop.wait(1.0):
            reap_children()  # a killed service is our child: until reaped it looks alive
            before = set(_running())
            started = start_all(workers=WORKERS, env=SERVICE_ENV)
            for name in set(started) - before:
                self.restarts[name] = self.restarts.get(name, 0) + 1
            now = time.monotonic()
            if now >= next_kill and now < self.chaos_until:
                name, pid = self.rng.choice(sorted(_running().items()))
                os.kill(pid, signal.SIGKILL)
                self.kills.append((round(now, 1), name))
                print(f"chaos: SIGKILL {name} (pid {pid})", flush=True)
                next_kill = now + self.rng.uniform(15, 25)


def reap_children() -> None:
    """Collect the exit status of every service process of ours that ended."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


async def drop(settings: CommonSettings, job: Submission) -> None:
    job.key = f"soak/{uuid.uuid4().hex[:8]}/{job.clip.name}"
    metadata: dict[str, str | list[str] | tuple[str]] = dict(job.metadata)
    await asyncio.to_thread(
        make_client(settings).fput_object,
        settings.incoming_bucket,
        job.key,
        str(job.clip),
        metadata=metadata,
    )


async def delete_when_running(settings: CommonSettings, job: Submission) -> None:
    """Delete the job's source once its chunks are being interpolated."""
    connection = await connect(settings)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = await connection.fetchval("select status from jobs where source_key = $1", job.key)
            if status == "interpolating" or status in FINAL:
                break
            await asyncio.sleep(0.3)
    finally:
        await connection.close()
    await asyncio.to_thread(make_client(settings).remove_object, settings.incoming_bucket, job.key)
    print(f"deleted the source of {job.name}", flush=True)


def lag_by_group(settings: CommonSettings) -> dict[str, int]:
    """Records each pipeline consumer group has not committed, by group."""
    lags: dict[str, int] = {}
    for group, topics in GROUPS.items():
        consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
        try:
            lag = 0
            for topic in topics:
                meta = consumer.list_topics(topic, timeout=10).topics[topic]
                parts = [TopicPartition(topic, p) for p in meta.partitions]
                for tp in consumer.committed(parts, timeout=10):
                    high = consumer.get_watermark_offsets(tp, timeout=10)[1]
                    lag += high - tp.offset if tp.offset >= 0 else high
            lags[group] = lag
        finally:
            consumer.close()
    return lags


async def wait_final(settings: CommonSettings, jobs: list[Submission], timeout_s: float) -> None:
    connection = await connect(settings)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = {
                r["source_key"]: r
                for r in await connection.fetch(
                    "select * from jobs where source_key = any($1)", [j.key for j in jobs]
                )
            }
            for job in jobs:
                row = rows.get(job.key)
                if row is not None:
                    job.job_id, job.status, job.error_code = str(row["id"]), row["status"], row["error_code"]
                    if row["completed_at"] or row["status"] == "failed":
                        job.seconds = round((row["updated_at"] - row["created_at"]).total_seconds(), 1)
            if all(j.status in FINAL for j in jobs):
                return
            await asyncio.sleep(2)
    finally:
        await connection.close()


def write_report(report: dict[str, Any]) -> None:
    JSON_OUT.write_text(json.dumps(report, indent=2, default=str) + "\n")
    jobs = report["jobs"]
    lines = [
        START,
        f"Soak of {report['started']} (`make soak`): {len(jobs)} jobs, {WORKERS} workers, "
        f"chaos for {report['chaos_s']:.0f} s — {len(report['kills'])} SIGKILLs "
        f"({', '.join(sorted({name for _, name in report['kills']}))}), every dead service restarted "
        f"within ~1 s. Result: **{'passed' if report['passed'] else 'FAILED'}**.",
        "",
        "| job | expected | status | error code | wall s | webhook ids / deliveries | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for job in jobs:
        lines.append(
            f"| {job['name']} | {job['expect']} | {job['status']} | {job['error_code'] or ''} | "
            f"{job['seconds'] if job['seconds'] is not None else ''} | "
            f"{len(set(job['webhook_ids']))} / {job['deliveries']} | {'✓' if job['ok'] else '✗'} |"
        )
    lines += [
        "",
        f"Uncommitted records after the soak, by consumer group: {report['lag']}. "
        f"Services restarted during chaos: {report['restarts']}; restarted in the {report['settle_s']:.0f} s "
        f"after it: {report['restarts_after_chaos'] or 'none'}.",
        "Raw figures: `docs/soak.json`.",
        END,
    ]
    text = DOCS.read_text()
    block = "\n".join(lines)
    if START in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n## Soak\n\n" + block + "\n"
    DOCS.write_text(text)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chaos-s", type=float, default=600)
    parser.add_argument("--settle-s", type=float, default=60)
    parser.add_argument("--finish-timeout-s", type=float, default=1200)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    settings = CommonSettings()
    CLIPS.mkdir(parents=True, exist_ok=True)
    receiver = Receiver()
    jobs = submissions(receiver.url)
    stop_all()
    wait_ready(list(start_all(workers=WORKERS, env=SERVICE_ENV)))
    chaos = Chaos(random.Random(args.seed))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    chaos.start(args.chaos_s)
    try:
        deletions = []
        for job in jobs:  # spread over the first half of the chaos
            await drop(settings, job)
            print(f"dropped {job.name}", flush=True)
            if job.delete_mid_job:
                deletions.append(asyncio.create_task(delete_when_running(settings, job)))
            await asyncio.sleep(args.chaos_s / 2 / len(jobs))
        await asyncio.gather(*deletions)
        await asyncio.sleep(max(0.0, chaos.chaos_until - time.monotonic()))
        print("chaos over; waiting for every job to end", flush=True)
        await wait_final(settings, jobs, args.finish_timeout_s)
        restarts_at_end = dict(chaos.restarts)
        pids = _running()
        await asyncio.sleep(args.settle_s)  # a crash-looping service would restart meanwhile
        after = {name: n - restarts_at_end.get(name, 0) for name, n in chaos.restarts.items()}
        restarted_after = {name: n for name, n in after.items() if n}
        still_up = all(_alive(pid) for pid in pids.values())
        await asyncio.sleep(5)  # the last webhooks land
        lag = lag_by_group(settings)
    finally:
        chaos.stop()
        stop_all()
    for job in jobs:
        ids = receiver.by_job.get(str(job.job_id), [])
        job.webhook_ids, job.deliveries = ids, len(ids)
    passed = (
        all(job.ok for job in jobs) and not restarted_after and still_up and all(v == 0 for v in lag.values())
    )
    report = {
        "started": started,
        "chaos_s": args.chaos_s,
        "settle_s": args.settle_s,
        "kills": chaos.kills,
        "restarts": chaos.restarts,
        "restarts_after_chaos": restarted_after,
        "lag": lag,
        "passed": passed,
        "jobs": [asdict(job) | {"clip": str(job.clip), "ok": job.ok} for job in jobs],
    }
    write_report(report)
    for job in jobs:
        print(
            f"{'ok ' if job.ok else 'BAD'} {job.name}: {job.status} {job.error_code or ''} webhooks {job.deliveries}"
        )
    print(f"lag {lag}; restarted after chaos {restarted_after or 'none'}; passed: {passed}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
