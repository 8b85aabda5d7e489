"""Benchmark fair dispatch (issue 23): many jobs at once, first come first served against fair, in one run.

The services run three times with 2 flow workers (`ENGINE_THREADS=1`): with `DISPATCH=record`
(*before*: each `chunk.ready` record claims only its own chunk), with `DISPATCH=fair PREEMPT=false`
(*fair*: the record lets the worker claim the fairest chunk, `infiniteflow_common.dispatch`, but a
chunk in hand runs to its end) and with `DISPATCH=fair PREEMPT=true` (*after*, the default: a worker
also pauses its chunk at a batch boundary for a chunk owed a worker first, `services/gpu_interp/
preemption.py`). Same code, same clips. Cases:

a. a small job alone (320×240, 4 s, ×2): the reference latency (once, with the first mode);
b. the small job dropped 5 s after a big one (bench-pipeline's 1080p clip, ×4, ≥ 10 chunks): the small
   job's latency against a. and against a. plus one big chunk (its mean `interp_seconds`), and the big
   job's own end-to-end time;
c. tenant A drops 6 medium jobs, then tenant B the small job: B's latency against a.; once B's job is
   done, A's jobs are cancelled through the API (`POST /api/jobs/{id}/cancel`, as the CLI does);
d. a medium job, then 5 s later two small jobs together at priority 0 and 50 (object metadata
   `priority`): which one finishes first; the medium job is cancelled after.

Latency is upload start to `jobs.completed_at`. Between cases the run waits until every job it dropped
is final and both workers are idle. The tenants, their keys and every job the run dropped (rows and
objects) are removed at the end. Results go to docs/capacity-fairness.json and a table between markers
in docs/capacity.md, rewritten after each case so an interrupted run keeps what it measured.

Usage: timeout 2400 flock /tmp/infiniteflow-stack.lock make bench-fairness
       (.venv/bin/python scripts/bench_fairness.py [--quick]: tiny clips, a dry run of the plumbing)
Needs `make up`; hold the stack lock (other sessions share it). Leaves no service running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from minio.deleteobjects import DeleteObject

from infiniteflow_common.db import make_engine, session_factory, transaction
from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from infiniteflow_common.storage import make_client
from infiniteflow_common.tenants import create_tenant, issue_key
from services.supervisor import stop_all

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import CLIPS, git_commit, make_main_clip
from capacity import FINAL, connect, drop_clip, make_clip, start_services, wait_for_job
from report_section import write_section

DOCS = REPO_ROOT / "docs" / "capacity.md"
JSON_OUT = REPO_ROOT / "docs" / "capacity-fairness.json"
START, END = "<!-- bench-fairness:start -->", "<!-- bench-fairness:end -->"
MODES = ("record", "fair", "preempt")
MODE_ENV = {
    "record": {"DISPATCH": "record", "PREEMPT": "false"},
    "fair": {"DISPATCH": "fair", "PREEMPT": "false"},
    "preempt": {"DISPATCH": "fair", "PREEMPT": "true"},
}
AFTER = "preempt"
WORKERS = 2
WORKER_METRICS = [f"http://127.0.0.1:{9112 + i}/metrics" for i in range(1, WORKERS + 1)]
PREFIX = "bench-fairness/"
STALL_S = 30.0


@dataclass(frozen=True)
class Scale:
    """The clips and splitter setting of a run: the full one, or `--quick`'s tiny dry run."""

    small: Path
    big: Path
    big_label: str
    medium: Path
    medium_label: str
    chunk_target_s: float
    tenant_a_jobs: int = 6
    timeout_s: float = 900


@dataclass
class JobFigures:
    """One job of a case, from its row and its chunks' rows."""

    label: str
    key: str
    job_id: str | None = None
    status: str = "not found"
    tenant_id: str | None = None
    priority: int | None = None
    dropped_at: float = 0.0
    completed_at: float | None = None
    latency_s: float | None = None
    chunks: int = 0
    chunks_done: int = 0
    extra_claims: int = 0
    """Claims beyond one per chunk (`lease_epoch` − 1, summed): chunks taken again after a first try."""
    mean_chunk_interp_s: float | None = None
    stalled: bool = False
    cancelled_by_bench: bool = False

    def outcome(self) -> float | str:
        """The latency, or what became of a job that did not complete."""
        if self.latency_s is not None:
            return self.latency_s
        if self.stalled:
            return f"stalled ({self.chunks_done}/{self.chunks} chunks done)"
        return self.status


@dataclass
class Run:
    meta: dict[str, Any]
    jobs: dict[str, dict[str, dict[str, JobFigures]]] = field(default_factory=dict)
    """mode → case → role → figures."""
    dispatch_claims: dict[str, dict[str, float]] = field(default_factory=dict)
    """mode → what the workers' chunk.ready records led them to claim (`infiniteflow_dispatch_claims_total`)."""

    def put(self, mode: str, case: str, figures: dict[str, JobFigures]) -> None:
        self.jobs.setdefault(mode, {})[case] = figures


def scrape_workers() -> list[str]:
    """The workers' Prometheus pages (a worker that does not answer is left out)."""
    pages = []
    for url in WORKER_METRICS:
        try:
            pages.append(httpx.get(url, timeout=5).text)
        except httpx.HTTPError:
            continue
    return pages


def metric_sums(name: str, label: str) -> dict[str, float]:
    """A labelled counter summed over the workers, by label value."""
    sums: dict[str, float] = {}
    for page in scrape_workers():
        for value, number in re.findall(rf'^{name}\{{{label}="([^"]+)"\}} (\S+)$', page, re.MULTILINE):
            sums[value] = sums.get(value, 0.0) + float(number)
    return sums


def workers_busy() -> float:
    """Chunks the workers are interpolating now (`infiniteflow_worker_busy`, summed)."""
    found = [re.search(r"^infiniteflow_worker_busy (\S+)$", page, re.MULTILINE) for page in scrape_workers()]
    return sum(float(f.group(1)) for f in found if f)


class StalledError(Exception):
    """A job is interpolating, yet no worker has worked for `STALL_S` seconds."""


class Bench:
    """Drops jobs, reads their figures, cancels and cleans up; remembers every key it dropped."""

    def __init__(self, settings: CommonSettings, connection: asyncpg.Connection) -> None:
        self.settings = settings
        self.connection = connection
        self.keys: list[str] = []
        self.stalled: set[str] = set()
        self.priority_by_sql = False

    async def wait(self, key: str, dropped: float, timeout_s: float) -> None:
        """Wait for the job of `key` to end, or to stall: interpolating while both workers sit idle.

        A stalled job (chunks pending that no worker will take) is remembered, not waited for.
        """
        idle_since: list[float] = []

        def watch(job: asyncpg.Record | None) -> None:
            if job is None or job["status"] != "interpolating" or workers_busy() > 0:
                idle_since.clear()
                return
            idle_since.append(time.monotonic())
            if idle_since[-1] - idle_since[0] >= STALL_S:
                raise StalledError(key)

        try:
            await wait_for_job(self.connection, key, dropped, timeout_s=timeout_s, poll=watch)
        except StalledError:
            print(f"   {key} stalled: interpolating, workers idle for {STALL_S:.0f} s", flush=True)
            self.stalled.add(key)

    async def drop(
        self, clip: Path, multiplier: int, *, prefix: str = PREFIX, priority: int | None = None
    ) -> tuple[str, float]:
        metadata: dict[str, str | list[str] | tuple[str]] = {"multiplier": str(multiplier), "engine": "flow"}
        if priority is not None:
            metadata["priority"] = str(priority)
        key, dropped = await asyncio.to_thread(drop_clip, self.settings, clip, metadata, prefix=prefix)
        self.keys.append(key)
        return key, dropped

    async def job_row(self, key: str, timeout_s: float = 60) -> asyncpg.Record:
        deadline = time.monotonic() + timeout_s
        while (
            row := await self.connection.fetchrow("select * from jobs where source_key = $1", key)
        ) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no job for {key} after {timeout_s:.0f} s")
            await asyncio.sleep(0.1)
        return row

    async def ensure_priority(self, key: str, priority: int) -> None:
        """The metadata sets the priority; where ingest does not read it yet, SQL does (and the report says so)."""
        row = await self.job_row(key)
        if row["priority"] != priority:
            self.priority_by_sql = True
            await self.connection.execute("update jobs set priority = $1 where id = $2", priority, row["id"])

    async def figures(self, label: str, key: str, dropped: float) -> JobFigures:
        found = JobFigures(label=label, key=key, dropped_at=dropped)
        job = await self.connection.fetchrow("select * from jobs where source_key = $1", key)
        if job is None:
            return found
        chunks = await self.connection.fetch(
            "select interp_seconds, status, lease_epoch from chunks where job_id = $1", job["id"]
        )
        timed = [c["interp_seconds"] for c in chunks if c["interp_seconds"]]
        found.job_id = str(job["id"])
        found.status = str(job["status"])
        found.tenant_id = job["tenant_id"]
        found.priority = job["priority"]
        found.chunks = len(chunks)
        found.chunks_done = sum(c["status"] == "done" for c in chunks)
        found.extra_claims = sum(max(0, c["lease_epoch"] - 1) for c in chunks)
        found.stalled = key in self.stalled
        found.mean_chunk_interp_s = round(sum(timed) / len(timed), 2) if timed else None
        if job["completed_at"] is not None:
            found.completed_at = job["completed_at"].timestamp()
            found.latency_s = round(found.completed_at - dropped, 2)
        return found

    async def cancel(self, key: str, headers: dict[str, str] | None = None) -> bool:
        """Cancel the job of `key` the way `infiniteflow cancel` does; False when it had finished already."""
        job = await self.job_row(key)
        if job["status"] in FINAL:
            return False
        async with httpx.AsyncClient(base_url=self.settings.api_url, timeout=30, headers=headers) as client:
            response = await client.post(f"/api/jobs/{job['id']}/cancel")
        if response.status_code == 409:
            return False
        response.raise_for_status()
        return True

    async def quiesce(self, timeout_s: float = 180) -> None:
        """Every job dropped so far is final and both workers are idle (a cancelled chunk stops at its batch)."""
        deadline = time.monotonic() + timeout_s
        while True:
            open_jobs = await self.connection.fetchval(
                "select count(*) from jobs where source_key = any($1) and status <> all($2)", self.keys, FINAL
            )
            if open_jobs == 0 and await asyncio.to_thread(workers_busy) == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{open_jobs} jobs still open or workers busy after {timeout_s:.0f} s")
            await asyncio.sleep(0.5)

    async def remove_all(self, tenant_ids: list[str]) -> None:
        """Delete the jobs this run dropped (rows and objects) and its tenants with their keys."""
        ids = [
            r["id"]
            for r in await self.connection.fetch("select id from jobs where source_key = any($1)", self.keys)
        ]
        client = make_client(self.settings)
        doomed = {self.settings.incoming_bucket: list(self.keys)}
        for bucket in (self.settings.work_bucket, self.settings.output_bucket):
            doomed[bucket] = [
                str(o.object_name)
                for job_id in ids
                for o in client.list_objects(bucket, prefix=f"{job_id}/", recursive=True)
            ]
        for bucket, names in doomed.items():
            errors = list(client.remove_objects(bucket, [DeleteObject(n) for n in names]))
            if errors:
                print(f"   could not delete objects in {bucket}: {errors[:3]}", flush=True)
        async with self.connection.transaction():
            await self.connection.execute("delete from webhook_deliveries where job_id = any($1)", ids)
            await self.connection.execute("delete from webhooks where job_id = any($1)", ids)
            await self.connection.execute("delete from jobs where id = any($1)", ids)  # chunks cascade
            await self.connection.execute("delete from api_keys where tenant_id = any($1)", tenant_ids)
            await self.connection.execute("delete from rate_windows where tenant_id = any($1)", tenant_ids)
            await self.connection.execute("delete from tenants where id = any($1)", tenant_ids)


async def make_tenants(settings: CommonSettings) -> dict[str, dict[str, str]]:
    """Tenants A and B of case c (fresh ids, in that order), each with the API headers of a key of its own."""
    suffix = uuid.uuid4().hex[:6]
    a, b = f"bench-fair-a-{suffix}", f"bench-fair-b-{suffix}"
    engine = make_engine(settings.database_url.get_secret_value())
    try:
        async with transaction(session_factory(engine)) as session:
            await create_tenant(session, a)
            await create_tenant(session, b)
            keys = {t: await issue_key(session, t, label="bench-fairness") for t in (a, b)}
    finally:
        await engine.dispose()
    return {t: {"Authorization": f"Bearer {key.secret}"} for t, key in keys.items()}


async def case_a(bench: Bench, scale: Scale) -> dict[str, JobFigures]:
    key, dropped = await bench.drop(scale.small, 2)
    await bench.wait(key, dropped, scale.timeout_s)
    return {"small": await bench.figures("small alone", key, dropped)}


async def case_b(bench: Bench, scale: Scale) -> dict[str, JobFigures]:
    big, big_at = await bench.drop(scale.big, 4)
    await asyncio.sleep(5)
    small, small_at = await bench.drop(scale.small, 2)
    await bench.wait(small, small_at, scale.timeout_s)
    print("   small job done; waiting for the big one", flush=True)
    await bench.wait(big, big_at, scale.timeout_s)
    return {
        "small": await bench.figures("small after big", small, small_at),
        "big": await bench.figures("big", big, big_at),
    }


async def case_c(
    bench: Bench, scale: Scale, tenant_a: str, tenant_b: str, a_headers: dict[str, str]
) -> dict[str, JobFigures]:
    dropped = [
        await bench.drop(scale.medium, 4, prefix=f"tenants/{tenant_a}/") for _ in range(scale.tenant_a_jobs)
    ]
    await asyncio.sleep(5)
    b_key, b_at = await bench.drop(scale.small, 2, prefix=f"tenants/{tenant_b}/")
    await bench.wait(b_key, b_at, scale.timeout_s)
    cancelled = {key for key, _ in dropped if await bench.cancel(key, a_headers)}
    print(f"   B done; cancelled {len(cancelled)} of A's {len(dropped)} jobs", flush=True)
    figures = {"b_small": await bench.figures("tenant B small", b_key, b_at)}
    for n, (key, at) in enumerate(dropped, 1):
        figures[f"a_{n}"] = await bench.figures(f"tenant A medium {n}", key, at)
        figures[f"a_{n}"].cancelled_by_bench = key in cancelled
    return figures


async def case_d(bench: Bench, scale: Scale) -> dict[str, JobFigures]:
    big, big_at = await bench.drop(scale.medium, 4)
    await asyncio.sleep(5)
    # priority 0 first: it is the older job, so only the priority can put the 50 ahead of it
    low, low_at = await bench.drop(scale.small, 2, priority=0)
    high, high_at = await bench.drop(scale.small, 2, priority=50)
    await bench.ensure_priority(low, 0)
    await bench.ensure_priority(high, 50)
    await bench.wait(low, low_at, scale.timeout_s)
    await bench.wait(high, high_at, scale.timeout_s)
    cancelled = await bench.cancel(big)
    figures = {
        "p0": await bench.figures("small, priority 0", low, low_at),
        "p50": await bench.figures("small, priority 50", high, high_at),
        "big": await bench.figures("medium (in front)", big, big_at),
    }
    figures["big"].cancelled_by_bench = cancelled
    return figures


# ---------------------------------------------------------------- the report


def summary(run: Run) -> list[dict[str, Any]]:
    """The table's rows: case, before, after, after / before, target, met?"""

    def job(mode: str, case: str, role: str) -> JobFigures | None:
        return run.jobs.get(mode, {}).get(case, {}).get(role)

    def latency(mode: str, case: str, role: str) -> float | None:
        found = job(mode, case, role)
        return found.latency_s if found else None

    def shown(case: str, role: str) -> dict[str, float | str | None]:
        """Per mode: the latency, or what became of a job that did not complete."""
        return {m: (j.outcome() if (j := job(m, case, role)) else None) for m in MODES}

    def missed(mode: str, case: str, role: str) -> bool:
        """The job ran but did not complete: a target that needs it is not met."""
        found = job(mode, case, role)
        return found is not None and found.latency_s is None

    alone = next((v for m in MODES if (v := latency(m, "a", "small")) is not None), None)

    def over(value: float | None, base: float | None) -> float | None:
        return None if value is None or not base else round(value / base, 2)

    def met(mode: str, case: str, role: str, value: float | None, ok: bool | None) -> bool | None:
        return False if missed(mode, case, role) else None if value is None else ok

    def first_done(mode: str) -> str | None:
        p0, p50 = job(mode, "d", "p0"), job(mode, "d", "p50")
        if not p0 or not p50 or (p0.completed_at is None and p50.completed_at is None):
            return None
        if p0.completed_at is None or p50.completed_at is None:
            return "priority 50" if p0.completed_at is None else "priority 0"
        return "priority 50" if p50.completed_at <= p0.completed_at else "priority 0"

    rows: list[dict[str, Any]] = []

    def add(case: str, values: dict[str, Any], target: str, ok: bool | None, unit: str = "") -> None:
        before, after = values["record"], values[AFTER]
        numbers = isinstance(before, float | int) and isinstance(after, float | int)
        ratio = round(after / before, 2) if numbers and before else None
        rows.append(
            {
                "case": case,
                "before": before,
                "fair": values["fair"],
                "after": after,
                "ratio": ratio,
                "target": target,
                "met": ok,
                "unit": unit,
            }
        )

    add("a. small job alone: latency", {m: alone for m in MODES}, "reference", None, " s")
    add("b. small job dropped 5 s after the big one: latency", shown("b", "small"), "—", None, " s")
    b_small = {m: latency(m, "b", "small") for m in MODES}
    chunk = {m: (j.mean_chunk_interp_s if (j := job(m, "b", "big")) else None) for m in MODES}
    b_chunk = {m: over(b_small[m], alone + c) if alone and (c := chunk[m]) else None for m in MODES}
    fair = b_chunk[AFTER]
    add(
        "b. small latency ÷ (alone + one big chunk's mean `interp_seconds`)",
        b_chunk,
        "≤ 1×",
        met(AFTER, "b", "small", fair, fair is not None and fair <= 1),
        "×",
    )
    b_alone = over(b_small[AFTER], alone)
    add(
        "b. small latency ÷ alone (stretch, by preemption)",
        {m: over(b_small[m], alone) for m in MODES},
        "≤ 1.5×",
        met(AFTER, "b", "small", b_alone, b_alone is not None and b_alone <= 1.5),
        "×",
    )
    add("b. big job: mean chunk `interp_seconds`", chunk, "—", None, " s")
    big_ratio = over(latency(AFTER, "b", "big"), latency("record", "b", "big"))
    add(
        "b. big job end to end",
        shown("b", "big"),
        "after / before ≤ 1.10× (no more than 10 % slower)",
        met(AFTER, "b", "big", big_ratio, big_ratio is not None and big_ratio <= 1.10),
        " s",
    )
    cost = over(latency(AFTER, "b", "big"), latency("fair", "b", "big"))
    add(
        "b. big job end to end ÷ *fair*'s: what preemption costs it",
        {"record": None, "fair": None, AFTER: cost},
        "—",
        None,
        "×",
    )
    add(
        "b. big job: extra claims (`lease_epoch` − 1, summed over its chunks)",
        {m: (f"{j.extra_claims} ({j.chunks} chunks)" if (j := job(m, "b", "big")) else None) for m in MODES},
        "0",
        None,
    )
    add(
        f"c. tenant B's small job behind A's {run.meta['tenant_a_jobs']}: latency",
        shown("c", "b_small"),
        "—",
        None,
        " s",
    )
    c_alone = {m: over(latency(m, "c", "b_small"), alone) for m in MODES}
    fair = c_alone[AFTER]
    add(
        "c. B's latency ÷ alone",
        c_alone,
        "≤ 2×",
        met(AFTER, "c", "b_small", fair, fair is not None and fair <= 2),
        "×",
    )
    for role, name in (("p50", "priority 50"), ("p0", "priority 0")):
        add(f"d. small job at {name}, behind a medium job: latency", shown("d", role), "—", None, " s")
    first = {m: first_done(m) for m in MODES}
    add(
        "d. which small job finishes first",
        first,
        "priority 50",
        None if first[AFTER] is None else first[AFTER] == "priority 50",
    )
    return rows


def cell(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float | int):
        return f"{value:.2f}×" if unit == "×" else f"{value:,.1f}{unit}"
    return str(value)


def render(run: Run) -> str:
    meta = run.meta
    lines = [
        START,
        f"## Many jobs at once: first come first served against fair dispatch (`make bench-fairness`, {meta['when']})",
        "",
        f"Measured in one run of `scripts/bench_fairness.py` at {meta['commit']} on this machine (2 shared "
        f"cores), flow engine, {WORKERS} workers with `ENGINE_THREADS=1`, `CHUNK_TARGET_S={meta['chunk_target_s']:g}`. "
        "*before* is `DISPATCH=record` (each chunk.ready record claims its own chunk: first come, first "
        "served); *fair* is `DISPATCH=fair PREEMPT=false` (the record lets the worker claim the fairest "
        "chunk, `infiniteflow_common.dispatch`; a chunk in hand runs to its end); *after* is the default, "
        "`DISPATCH=fair PREEMPT=true` (a worker also pauses its chunk at a batch boundary for a chunk "
        "owed a worker first). Latency is upload to `completed_at`. Single runs on a shared machine: "
        "expect ±10–20 % noise on times.",
        "",
        f"Small job: {meta['small']}. Big job (b): {meta['big']}. Medium job (c's tenant A, d's front job): "
        f"{meta['medium']}{' — smaller than the big one so that c and d fit the run' if not meta['quick'] else ''}.",
        "",
        "| case | before | fair | after | after / before | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary(run):
        met = {True: "yes", False: "**no**", None: ""}[row["met"]]
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}×"
        lines.append(
            f"| {row['case']} | {cell(row['before'], row['unit'])} | {cell(row['fair'], row['unit'])} | "
            f"{cell(row['after'], row['unit'])} | "
            f"{ratio} | {row['target']} | {met} |"
        )
    big_chunks = {m: j.chunks for m in MODES if (j := run.jobs.get(m, {}).get("b", {}).get("big"))}
    claims = {m: run.dispatch_claims.get(m, {}) for m in MODES}
    lines += [
        "",
        f"The small job alone ran once (it does not depend on `DISPATCH`), with {meta['alone_mode'] or '—'}. "
        f"Big job chunks: {', '.join(f'{m} {n}' for m, n in big_chunks.items()) or '—'}. "
        "What the workers' records led them to claim over the whole session (`infiniteflow_dispatch_claims_total`): "
        + "; ".join(
            f"{m}: " + (", ".join(f"{k} {v:.0f}" for k, v in sorted(c.items())) or "—")
            for m, c in claims.items()
        )
        + ".",
        "",
        f"Case c cancels tenant A's jobs once B's is done, and d its medium job once both small ones are "
        f"done (through the API, as `infiniteflow cancel` does). Priorities are object metadata "
        f"(`x-amz-meta-priority`){'; this run set them by SQL too, ingest did not read the metadata yet' if meta.get('priority_by_sql') else ''}.",
    ]
    lines += [
        "",
        f"A job *stalls* when it is interpolating while both workers sit idle for {STALL_S:.0f} s (chunks "
        "pending that no chunk.ready record will bring a worker to); the run records it and cancels it. "
        "Extra claims count a chunk claimed again after a first try (`chunks.lease_epoch` − 1).",
    ]
    if meta.get("failures"):
        lines += ["", "Failed in this run: " + "; ".join(meta["failures"]) + "."]
    lines += [
        "",
        f"Command: `{meta['command']}` ({meta.get('wall_s', '?')} s wall). Raw figures: `docs/capacity-fairness.json`.",
        END,
    ]
    return "\n".join(lines)


def load(path: Path) -> Run:
    """The run a `write` saved (to render its table again, e.g. after a target's wording changed)."""
    saved = json.loads(path.read_text())
    jobs = {
        m: {c: {r: JobFigures(**f) for r, f in roles.items()} for c, roles in cases.items()}
        for m, cases in saved["jobs"].items()
    }
    return Run(meta=saved["meta"], jobs=jobs, dispatch_claims=saved["dispatch_claims"])


def write(run: Run, *, docs: bool) -> None:
    payload = {
        "meta": run.meta,
        "summary": summary(run),
        "dispatch_claims": run.dispatch_claims,
        "jobs": {
            m: {c: {r: asdict(f) for r, f in roles.items()} for c, roles in cases.items()}
            for m, cases in run.jobs.items()
        },
    }
    out = JSON_OUT if docs else Path(tempfile.gettempdir()) / "capacity-fairness.quick.json"
    out.write_text(json.dumps(payload, indent=2) + "\n")
    if docs:
        write_section(DOCS, START, END, render(run))


def full_scale() -> Scale:
    big, scenes, _ = make_main_clip()
    return Scale(
        small=make_clip("320x240", 4, CLIPS),
        big=big,
        big_label=f"bench-pipeline's 1080p clip (10 s, scenes of {', '.join(map(str, scenes))} frames), ×4",
        medium=make_clip("640x360", 8, CLIPS),
        medium_label="640×360, 8 s, ×4",
        chunk_target_s=60,
    )


def quick_scale() -> Scale:
    return Scale(
        small=make_clip("160x120", 2, CLIPS),
        big=make_clip("320x240", 4, CLIPS),
        big_label="320×240, 4 s, ×4",
        medium=make_clip("160x120", 4, CLIPS),
        medium_label="160×120, 4 s, ×4",
        chunk_target_s=1,
        tenant_a_jobs=3,
        timeout_s=300,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--quick", action="store_true", help="tiny clips: checks the plumbing, keeps docs as they are"
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="rewrite the docs' table from docs/capacity-fairness.json, run nothing",
    )
    args = parser.parse_args()
    if args.render:
        write(load(JSON_OUT), docs=True)
        return
    began = time.monotonic()
    settings = CommonSettings()
    scale = quick_scale() if args.quick else full_scale()
    run = Run(
        meta={
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": git_commit(REPO_ROOT),
            "quick": args.quick,
            "chunk_target_s": scale.chunk_target_s,
            "small": "320×240, 4 s, ×2" if not args.quick else "160×120, 2 s, ×2",
            "big": scale.big_label,
            "medium": scale.medium_label,
            "tenant_a_jobs": scale.tenant_a_jobs,
            "alone_mode": None,
            "command": " ".join(
                ["timeout 2400 flock /tmp/infiniteflow-stack.lock .venv/bin/python", *sys.argv]
            ),
            "argv": sys.argv[1:],
            "failures": [],
        }
    )
    tenant_headers = await make_tenants(settings)
    tenant_a, tenant_b = tenant_headers
    a_headers = tenant_headers[tenant_a]
    connection = await connect(settings)
    bench = Bench(settings, connection)
    try:
        for mode in MODES:
            env = {"ENGINE_THREADS": "1", **MODE_ENV[mode], "CHUNK_TARGET_S": f"{scale.chunk_target_s:g}"}
            print(f"== {mode}: starting {WORKERS} workers, {env}", flush=True)
            start_services(WORKERS, env)
            await asyncio.sleep(5)  # every worker assigned before the clock starts
            cases: list[tuple[str, Any]] = []
            if run.meta["alone_mode"] is None:
                cases.append(("a", lambda: case_a(bench, scale)))
            cases += [
                ("b", lambda: case_b(bench, scale)),
                ("c", lambda: case_c(bench, scale, tenant_a, tenant_b, a_headers)),
                ("d", lambda: case_d(bench, scale)),
            ]
            for name, case in cases:
                print(f"-- {mode} case {name} ({time.monotonic() - began:.0f} s into the run)", flush=True)
                mark = len(bench.keys)
                try:
                    figures = await case()
                except Exception as error:  # one failed case leaves the others' figures
                    run.meta["failures"].append(f"{mode} {name}: {type(error).__name__}: {error}")
                    print(f"   failed: {error}", flush=True)
                else:
                    run.put(mode, name, figures)
                    if name == "a":
                        run.meta["alone_mode"] = " ".join(f"{k}={v}" for k, v in MODE_ENV[mode].items())
                    for role, f in figures.items():
                        print(f"   {role}: {json.dumps(asdict(f))}", flush=True)
                # nothing of this case (a stalled job, a failed case's) may hold the workers for the next
                for key in bench.keys[mark:]:
                    try:
                        owner = next((t for t in tenant_headers if key.startswith(f"tenants/{t}/")), None)
                        await bench.cancel(key, tenant_headers[owner] if owner else None)
                    except Exception as cancel_error:
                        print(f"   could not cancel {key}: {cancel_error}", flush=True)
                await bench.quiesce()
                run.meta["priority_by_sql"] = bench.priority_by_sql
                run.dispatch_claims[mode] = metric_sums("infiniteflow_dispatch_claims_total", "claimed")
                write(run, docs=not args.quick)
            stop_all()
    finally:
        stop_all()
        try:
            await bench.remove_all([tenant_a, tenant_b])
        finally:
            await connection.close()
    run.meta["wall_s"] = round(time.monotonic() - began)
    write(run, docs=not args.quick)
    print(render(run))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
