"""A chunk that kills its worker (an OOM kill is a SIGKILL: no in-process step-down, no hand-back) must
not kill every worker in turn. Workers are restarted the way a container runtime restarts them (same
WORKER_ID, fresh process); the chunk is retried, tried once at the lightest settings, and then its job
fails with E_CHUNK_POISON while other jobs complete, and no worker is left crash-looping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.faults import FAULT_SETTINGS, assert_one_good_output, chunk_rows, run_job
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess, running_pipeline, start_service
from tests.support.waiting import eventually

pytestmark = WHOLE_PIPELINE

CRASH_POINT = "gpu_interp.interpolate"


@dataclass
class Restarter:
    """Restarts every dead worker with the environment it had (same WORKER_ID), like a kubelet."""

    services: list[ServiceProcess]
    logdir: Path
    environments: dict[str, dict[str, str]] = field(default_factory=dict)
    deaths: list[tuple[str, int | None]] = field(default_factory=list)

    def watch(self) -> None:
        for service in self.services:
            if service.name.startswith("gpu_interp") and service.alive():
                # the live environment, WORKER_ID included, exactly as its process was started
                raw = Path(f"/proc/{service.process.pid}/environ").read_bytes()
                env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
                self.environments.setdefault(service.name, env)

    async def run(self) -> None:
        while True:
            for service in list(self.services):
                if service.name in self.environments and not service.alive():
                    env = self.environments.pop(service.name)
                    self.deaths.append((service.name, service.process.returncode))
                    # gpu_interp-1 → gpu_interp-1~1 → gpu_interp-1~2 …: one log per life
                    base = service.name.split("~")[0]
                    life = sum(1 for name, _ in self.deaths if name.split("~")[0] == base)
                    replacement = start_service(
                        "gpu_interp", self.logdir, env, f"{base.removeprefix('gpu_interp')}~{life}"
                    )
                    self.services.remove(service)
                    self.services.append(replacement)  # stopped with the rest
                    self.environments[replacement.name] = env
            await asyncio.sleep(0.1)


@asynccontextmanager
async def restarting(services: list[ServiceProcess], logdir: Path) -> AsyncIterator[Restarter]:
    restarter = Restarter(services, logdir)
    restarter.watch()
    assert len(restarter.environments) == 2, "two workers to restart"
    task = asyncio.create_task(restarter.run())
    try:
        yield restarter
    finally:
        task.cancel()


def _logs(logdir: Path) -> str:
    return "\n".join(path.read_text(errors="replace") for path in sorted(logdir.glob("gpu_interp*.log")))


async def _no_more_deaths(restarter: Restarter, services: list[ServiceProcess], quiet_s: float) -> None:
    """Nothing dies for `quiet_s` (longer than a lease and a group eviction): no service crash-loops."""
    deaths = len(restarter.deaths)
    deadline = time.monotonic() + quiet_s
    while time.monotonic() < deadline:
        assert len(restarter.deaths) == deaths, f"a worker died again: {restarter.deaths}"
        dead = [s.name for s in services if not s.alive() and not s.name.startswith("gpu_interp")]
        assert not dead, f"{dead} died"
        await asyncio.sleep(0.5)
    workers = [s for s in services if s.name.startswith("gpu_interp")]
    assert len(workers) == 2
    assert all(s.alive() and s.ready() for s in workers), [s.name for s in workers]


async def test_a_chunk_that_kills_every_worker_that_tries_it_fails_its_job_and_the_fleet_recovers(
    settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    poison_key, good_key = f"faults/{unique}/poison.mp4", f"faults/{unique}/good.mp4"
    logdir = tmp_path / "logs"
    crash = {"CRASH_AT": CRASH_POINT, "CRASH_MATCH": f"{poison_key}#0", "CHUNK_MAX_ATTEMPTS": "2"}
    with running_pipeline(logdir, **FAULT_SETTINGS, **crash) as services:
        async with restarting(services, logdir) as restarter:
            (tmp_path / "poison").mkdir()
            (tmp_path / "good").mkdir()
            await run_job(settings, tmp_path / "poison", poison_key, seconds=1)
            await run_job(settings, tmp_path / "good", good_key, seconds=1)

            failed = await wait_for_job(settings, key=poison_key, timeout_s=300)
            assert (failed["status"], failed["error_code"]) == ("failed", "E_CHUNK_POISON"), failed
            assert "chunk 0" in failed["error_message"]
            assert "all 3 attempts" in failed["error_message"]
            good = await wait_for_job(settings, key=good_key, timeout_s=180)
            await assert_one_good_output(settings, good, 30, tmp_path / "good")

            # CHUNK_MAX_ATTEMPTS=2 lost tries, then the conservative one: three kills, and no fourth
            assert [code for _, code in restarter.deaths] == [-9, -9, -9], restarter.deaths
            await _no_more_deaths(restarter, services, quiet_s=2 * float(FAULT_SETTINGS["LEASE_SECONDS"]) + 6)

    poison_rows = await chunk_rows(settings, failed["id"])
    assert (poison_rows[0]["status"], poison_rows[0]["attempts"]) == ("failed", 4)
    logs = _logs(logdir)
    assert logs.count('"trying the chunk once with the most conservative settings"') == 1
    assert '"poison chunk: every attempt killed its worker; failing the job"' in logs
    work = make_client(settings)
    await eventually(
        lambda: not list(work.list_objects(settings.work_bucket, prefix=f"{failed['id']}/", recursive=True)),
        30,
        "the failed job's work objects to be removed",
        interval_s=0.5,
    )


async def test_a_chunk_whose_worker_was_killed_once_is_finished_at_the_lightest_settings(
    settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    key = f"faults/{unique}/once.mp4"
    logdir = tmp_path / "logs"
    crash = {"CRASH_AT": CRASH_POINT, "CRASH_MARKER": str(tmp_path / "crashed"), "CHUNK_MAX_ATTEMPTS": "1"}
    with running_pipeline(logdir, **FAULT_SETTINGS, **crash) as services:
        async with restarting(services, logdir) as restarter:
            await run_job(settings, tmp_path, key, seconds=1)
            job = await wait_for_job(settings, key=key, timeout_s=180)
            await assert_one_good_output(settings, job, 30, tmp_path)
            assert [code for _, code in restarter.deaths] == [137]
    rows = await chunk_rows(settings, job["id"])
    retried = [row for row in rows if row["attempts"] == 2]
    assert len(retried) == 1, "the chunk whose worker was killed was tried again"
    assert (retried[0]["scale"], retried[0]["batch_size"]) == (0.25, 1), "at MIN_SCALE, one pair per call"
    others = [row for row in rows if row["attempts"] == 1]
    assert all(row["batch_size"] == 4 for row in others), "the other chunks ran at the worker's settings"
    assert (tmp_path / "crashed").exists()
