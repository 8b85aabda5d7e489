"""Where a queued job stands: how many jobs fair dispatch serves before it, and when it should start.

A job is *queued* while none of its chunks has started (it is split, every chunk waits). Its position is
1 + the queued jobs the dispatcher would start before it, and its estimated start is when a worker
running now would take its first chunk. Both come from replaying `dispatch`'s order on what runs now:
every worker running a chunk frees up when that chunk's estimated time is over, takes the fairest
waiting chunk (tenant share = running ÷ weight asc, priority desc, job's running chunks asc, the job
served longest ago, oldest job),
works on it for its estimated time, and so on until every queued job has started.

The approximation, stated once:

- the fleet is the chunks running now (at least one worker, even when none runs: a fleet that is idle
  or down has no size to measure); workers that join or leave later are not foreseen;
- a job's waiting chunks each take its average: the splitter sizes chunks to equal work anyway;
- a chunk's time is its work ÷ its engine's rate, with the splitter's work model (`frames_for_work`):
  pixels × frames × max(0.1, out/in − 1) interpolated frames per source frame;
- the rate per engine is measured on the chunks finished in the last hour (work ÷ `interp_seconds`)
  once there are `MIN_RATE_SAMPLES` of them, else the configured `engine_mpix_per_s` (the splitter's);
- no failures, retries or new jobs; `dispatch`'s tie on the record that rang is ignored.

*Waiting* chunks are those to do that no live lease holds: pending ones, and claimed ones whose lease
ran out (the next claim takes them over). The pure part (rates, `standings`, `tenant_loads`) is
separate from the two queries that feed it (`read_loads`).
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from infiniteflow_common.db import utcnow
from infiniteflow_common.domain import FINAL_STATUSES

ANONYMOUS = "anonymous"
"""The tenant label of jobs without a tenant (one tenant of weight 1 to the dispatcher). A tenant whose
id is "anonymous" would share the label: operators should not create one."""
MIN_RATE_SAMPLES = 3
"""Finished chunks of an engine in `RATE_WINDOW` before their measured rate replaces the configured one."""
RATE_WINDOW = timedelta(hours=1)
FALLBACK_MPIX_PER_S = 1.0
"""The rate of an engine nobody configured (the splitter assumes the same)."""


# --- the arithmetic (pure) -------------------------------------------------------------------------


def work_per_frame_mpix(width: int, height: int, in_fps: Fraction, out_fps: Fraction) -> float:
    """Megapixels interpolated per source frame: the splitter's `frames_for_work` model."""
    interpolated = max(Fraction(1, 10), out_fps / in_fps - 1)
    return width * height * float(interpolated) / 1e6


@dataclass(frozen=True)
class RateSample:
    """Finished chunks of one engine: their work (megapixels) and the seconds workers spent on them."""

    engine: str
    chunks: int
    work_mpix: float
    seconds: float


def engine_rates(
    configured: Mapping[str, float], samples: Iterable[RateSample], *, min_samples: int = MIN_RATE_SAMPLES
) -> dict[str, float]:
    """Megapixels per second per engine: measured where enough chunks finished, else configured."""
    rates = dict(configured)
    totals: dict[str, RateSample] = {}
    for s in samples:
        seen = totals.get(s.engine, RateSample(s.engine, 0, 0.0, 0.0))
        totals[s.engine] = RateSample(
            s.engine, seen.chunks + s.chunks, seen.work_mpix + s.work_mpix, seen.seconds + s.seconds
        )
    for engine, total in totals.items():
        if total.chunks >= min_samples and total.seconds > 0 and total.work_mpix > 0:
            rates[engine] = total.work_mpix / total.seconds
    return rates


@dataclass(frozen=True)
class JobLoad:
    """A running job as dispatch sees it, with its chunks' estimated seconds."""

    job_id: uuid.UUID
    tenant: str | None
    """None: the job has no tenant."""
    weight: float
    priority: int
    created_at: datetime
    started: bool
    """Whether any chunk has started: a job that has not is queued."""
    waiting: int
    """Chunks to do that no live lease holds."""
    waiting_s: float
    """Estimated worker seconds of the waiting chunks."""
    running_left_s: tuple[float, ...] = ()
    """Estimated seconds left of each chunk running now (0 for one past its estimate)."""
    served_ago_s: float | None = None
    """Seconds since a worker last took one of its chunks; None: never."""

    @property
    def queued(self) -> bool:
        """Split, and not a chunk started yet."""
        return not self.started and self.waiting > 0


@dataclass(frozen=True)
class Standing:
    """A queued job's place: 1 is next, and the seconds until a worker should take its first chunk."""

    position: int
    wait_s: float

    @property
    def jobs_ahead(self) -> int:
        """Queued jobs that should start before this one."""
        return self.position - 1


def standings(jobs: Sequence[JobLoad]) -> dict[uuid.UUID, Standing]:
    """Every queued job's position and estimated wait, replaying dispatch (see the module doc)."""
    queued = {job.job_id for job in jobs if job.queued}
    if not queued:
        return {}
    by_id = {job.job_id: job for job in jobs}
    left = {job.job_id: job.waiting for job in jobs}
    running = {job.job_id: len(job.running_left_s) for job in jobs}
    tenant_running: dict[str | None, int] = {}
    for job in jobs:
        tenant_running[job.tenant] = tenant_running.get(job.tenant, 0) + running[job.job_id]
    # worker free-up times: (seconds from now, tie-breaker, job of the chunk that ends then or None)
    free: list[tuple[float, int, uuid.UUID | None]] = [
        (max(0.0, s), n, job.job_id)
        for n, (job, s) in enumerate((job, s) for job in jobs for s in job.running_left_s)
    ] or [(0.0, 0, None)]
    heapq.heapify(free)
    sequence = len(free)

    # when each job was last served, in seconds from now (never: before everything)
    served = {
        job.job_id: -job.served_ago_s if job.served_ago_s is not None else float("-inf") for job in jobs
    }

    def order(job: JobLoad) -> tuple[float, int, int, float, datetime, str]:
        share = tenant_running[job.tenant] / job.weight
        return (
            share, -job.priority, running[job.job_id], served[job.job_id], job.created_at, str(job.job_id)
        )  # fmt: skip

    found: dict[uuid.UUID, Standing] = {}
    while free and len(found) < len(queued):
        now, _, ended = heapq.heappop(free)
        if ended is not None:
            running[ended] -= 1
            tenant_running[by_id[ended].tenant] -= 1
        candidates = [by_id[j] for j, n in left.items() if n > 0]
        if not candidates:
            continue
        job = min(candidates, key=order)
        if job.job_id in queued and job.job_id not in found:
            found[job.job_id] = Standing(position=len(found) + 1, wait_s=now)
        chunk_s = job.waiting_s / job.waiting
        left[job.job_id] -= 1
        served[job.job_id] = now
        running[job.job_id] += 1
        tenant_running[job.tenant] += 1
        heapq.heappush(free, (now + chunk_s, sequence, job.job_id))
        sequence += 1
    return found


@dataclass(frozen=True)
class TenantLoad:
    """A tenant's work right now: chunks waiting, their estimated seconds, chunks running."""

    waiting: int = 0
    waiting_s: float = 0.0
    running: int = 0


def tenant_loads(jobs: Iterable[JobLoad], tenants: Iterable[str] = ()) -> dict[str, TenantLoad]:
    """Per tenant (and `ANONYMOUS`), zeros included for `tenants` without work."""
    loads = {tenant: TenantLoad() for tenant in (*tenants, ANONYMOUS)}
    for job in jobs:
        label = job.tenant or ANONYMOUS
        seen = loads.get(label, TenantLoad())
        loads[label] = TenantLoad(
            seen.waiting + job.waiting, seen.waiting_s + job.waiting_s, seen.running + len(job.running_left_s)
        )
    return loads


# --- reading PostgreSQL ----------------------------------------------------------------------------

_FINAL = tuple(sorted(FINAL_STATUSES))

# Running jobs with chunks: what each waits on and runs now. Only small JSON fields are read (the probe,
# the params, the plan's rates): chunk specs hold every output slot and would be read whole.
_LOADS = text(
    """
select j.id, j.tenant_id, coalesce(t.weight, 1.0) as weight, j.priority, j.created_at,
       j.probe->>'width' as width, j.probe->>'height' as height, j.params->>'engine' as engine,
       j.plan->>'in_fps_num' as in_num, j.plan->>'in_fps_den' as in_den,
       j.plan->>'out_fps_num' as out_num, j.plan->>'out_fps_den' as out_den,
       bool_or(c.started_at is not null) as started,
       count(*) filter (where c.status = 'pending' or (c.status = 'claimed' and c.worker is not null and c.lease_expires_at < :now))
           as waiting,
       coalesce(sum(c.frame_count) filter (
           where c.status = 'pending' or (c.status = 'claimed' and c.worker is not null and c.lease_expires_at < :now)), 0)
           as waiting_frames,
       coalesce(array_agg(c.frame_count) filter (
           where c.status = 'claimed' and c.lease_expires_at >= :now), '{}') as running_frames,
       coalesce(array_agg(extract(epoch from :now - coalesce(c.started_at, :now))::float) filter (
           where c.status = 'claimed' and c.lease_expires_at >= :now), '{}') as running_for_s,
       extract(epoch from :now - max(c.started_at))::float as served_ago_s
from jobs j
join chunks c on c.job_id = j.id
left join tenants t on t.id = j.tenant_id
where j.status not in :final
group by j.id, t.weight
"""
).bindparams(bindparam("final", expanding=True))

# Chunks finished in the window, per job (their work per frame is the job's): the measured rates.
_FINISHED = text(
    """
select j.params->>'engine' as engine,
       j.probe->>'width' as width, j.probe->>'height' as height,
       j.plan->>'in_fps_num' as in_num, j.plan->>'in_fps_den' as in_den,
       j.plan->>'out_fps_num' as out_num, j.plan->>'out_fps_den' as out_den,
       count(*) as chunks, sum(c.frame_count) as frames, sum(c.interp_seconds) as seconds
from jobs j
join chunks c on c.job_id = j.id
where (j.status not in :final or j.updated_at >= :since)
  and c.status = 'done' and c.interp_seconds > 0 and c.finished_at >= :since
group by j.id
"""
).bindparams(bindparam("final", expanding=True))


def _frame_work(row: Any) -> float:
    """Megapixels per source frame of a row's job; ×2 work where the probe or plan is missing."""
    try:
        in_fps = Fraction(int(row.in_num), int(row.in_den))
        out_fps = Fraction(int(row.out_num), int(row.out_den))
        return work_per_frame_mpix(int(row.width), int(row.height), in_fps, out_fps)
    except (TypeError, ValueError, ZeroDivisionError):
        return work_per_frame_mpix(int(row.width or 0), int(row.height or 0), Fraction(1), Fraction(2))


def _engine(row: Any) -> str:
    return str(row.engine or "")


@dataclass(frozen=True)
class Snapshot:
    """The running jobs' loads at `at`, and the rates their estimates used."""

    at: datetime
    jobs: list[JobLoad]
    rates: dict[str, float] = field(default_factory=dict)

    def standings(self) -> dict[uuid.UUID, Standing]:
        """Every queued job's standing (see `standings`)."""
        return standings(self.jobs)


async def read_loads(session: AsyncSession, configured_rates: Mapping[str, float]) -> Snapshot:
    """The running jobs' loads, their chunk times estimated with the current engine rates."""
    now = utcnow()
    finished = await session.execute(_FINISHED, {"final": _FINAL, "since": now - RATE_WINDOW})
    rates = engine_rates(
        configured_rates,
        (
            RateSample(_engine(r), int(r.chunks), _frame_work(r) * int(r.frames), float(r.seconds))
            for r in finished
        ),
    )
    jobs = []
    for r in await session.execute(_LOADS, {"final": _FINAL, "now": now}):
        per_frame_s = _frame_work(r) / rates.get(_engine(r), FALLBACK_MPIX_PER_S)
        jobs.append(
            JobLoad(
                job_id=r.id,
                tenant=r.tenant_id,
                weight=float(r.weight),
                priority=int(r.priority),
                created_at=r.created_at,
                started=bool(r.started),
                waiting=int(r.waiting),
                waiting_s=int(r.waiting_frames) * per_frame_s,
                running_left_s=tuple(
                    max(0.0, frames * per_frame_s - float(elapsed))
                    for frames, elapsed in zip(r.running_frames, r.running_for_s, strict=True)
                ),
                served_ago_s=None if r.served_ago_s is None else float(r.served_ago_s),
            )
        )
    return Snapshot(at=now, jobs=jobs, rates=rates)


async def tenant_ids(session: AsyncSession) -> list[str]:
    """Every tenant's id (their gauges exist at zero before they have work)."""
    return [str(r[0]) for r in await session.execute(text("select id from tenants order by id"))]


def queue_view(standing: Standing | None, at: datetime) -> dict[str, Any] | None:
    """The `queue` object of the status API: None unless the job is queued."""
    if standing is None:
        return None
    return {
        "position": standing.position,
        "jobs_ahead": standing.jobs_ahead,
        "estimated_wait_s": round(standing.wait_s, 1),
        "estimated_start": (at + timedelta(seconds=standing.wait_s)).isoformat(),
    }
