"""An operator opening the dashboards after one job sees data in every panel.

One job runs through the real services; then every panel's PromQL (Grafana variables replaced) is run
against the real Prometheus `make up` started, which finds the services by file discovery, until it
returns a series. Every metric a panel names must be exported by a running service, so a `vector(0)`
fallback cannot hide a typo. GPU panels are only required when this machine has CUDA.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from services.dashboards import GPU_METRICS, panel_queries, query
from tests.support.clips import panning_clip
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess, WebhookReceiver


def metric_names(expr: str) -> set[str]:
    """The project's metric names a query reads (histogram series mapped to their family)."""
    names = set(re.findall(r"\binfiniteflow_[a-z0-9_]+", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}


def cuda_available() -> bool:
    """Whether a worker on this machine would use CUDA (asked in a child: importing torch is slow)."""
    probe = "import torch; print(torch.cuda.is_available())"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    return result.stdout.strip() == "True"


def test_the_committed_dashboards_are_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "infra" / "grafana" / "build_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.kafka
@pytest.mark.minio
@pytest.mark.postgres
@pytest.mark.ffmpeg
@pytest.mark.slow
async def test_every_panel_query_returns_a_series_after_one_job(
    pipeline: list[ServiceProcess],
    webhooks: WebhookReceiver,
    settings: CommonSettings,
    workdir: Path,
) -> None:
    clip = panning_clip(workdir / "dash.mp4", width=160, height=96, seconds=1)
    async with httpx.AsyncClient(base_url=settings.api_url, timeout=60) as api:
        with clip.path.open("rb") as file:
            response = await api.post(
                "/api/upload",
                files={"file": ("dashboards.mp4", file, "video/mp4")},
                data={"multiplier": "2", "engine": "flow", "webhook_url": webhooks.url},
            )
    assert response.status_code == 202, response.text
    job = await wait_for_job(settings, job_id=response.json()["job_id"])
    assert job["status"] == "completed", job["error_message"]

    queries = [(q.dashboard, q.panel, q.expr) for q in panel_queries()]
    assert len(queries) >= 20
    with_gpu = cuda_available()
    required = [q for q in queries if with_gpu or GPU_METRICS not in q[2]]
    async with httpx.AsyncClient(base_url=settings.prometheus_url, timeout=30) as prometheus:
        pending = {q: 0 for q in required}
        deadline = time.monotonic() + 120  # first scrapes of new series, then rate() needs two samples
        while pending and time.monotonic() < deadline:
            for item in list(pending):
                series = await query(prometheus, item[2])
                if series:
                    del pending[item]
                    print(f"{item[0]:24} {item[1][:44]:44} {len(series):3} series  {item[2][:70]}")
            if pending:
                await asyncio.sleep(1)
        for item in queries:  # the optional ones must at least be valid PromQL
            await query(prometheus, item[2])
        assert not pending, "panels without data:\n" + "\n".join(f"{d} / {t}: {e}" for d, t, e in pending)

        exported = await _exported_metric_names(prometheus)
    named = set().union(*(metric_names(expr) for _, _, expr in required))
    assert named - exported == set(), f"metrics no running service exports: {sorted(named - exported)}"


async def _exported_metric_names(prometheus: httpx.AsyncClient) -> set[str]:
    """Metric families (from HELP lines) of every target Prometheus scrapes right now."""
    targets = (await prometheus.get("/api/v1/targets", params={"state": "active"})).json()["data"]
    names: set[str] = set()
    async with httpx.AsyncClient(timeout=10) as client:
        for target in targets["activeTargets"]:
            if target["health"] != "up":
                continue
            try:
                text = (await client.get(target["scrapeUrl"])).text
            except httpx.HTTPError:
                continue  # a process of another session that just stopped
            for line in text.splitlines():
                if line.startswith("# HELP "):
                    names.add(line.split()[2])
    return names | {re.sub(r"_total$", "", n) for n in names}
