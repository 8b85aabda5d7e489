"""Whether the shipped Grafana dashboards show data: every panel's PromQL, evaluated against Prometheus.

Used by `make demo` (its last line says how many panels have data) and by the dashboards test, which
requires all of them right after a job. Grafana's interval variables are replaced by fixed values, so a
query runs as Grafana would run it over the last hour.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from infiniteflow_common.settings import REPO_ROOT

DASHBOARDS = REPO_ROOT / "infra" / "grafana" / "dashboards"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
GPU_METRICS = "infiniteflow_gpu_"
"""Panels of these metrics have data only where workers run on a GPU."""


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel."""

    dashboard: str
    panel: str
    expr: str

    @property
    def needs_gpu(self) -> bool:
        """Whether only a GPU worker exports what it reads."""
        return GPU_METRICS in self.expr


def panel_queries() -> list[PanelQuery]:
    """Every target of every panel of the shipped dashboards, variables replaced."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                found.append(PanelQuery(path.name, panel["title"], expr))
    return found


async def query(prometheus: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    """The instant vector `expr` evaluates to now; AssertionError when Prometheus refuses the query."""
    response = await prometheus.get("/api/v1/query", params={"query": expr})
    body = response.json()
    if body.get("status") != "success":
        raise AssertionError(f"{expr}: {body}")
    return list(body["data"]["result"])


async def panels_without_data(
    prometheus_url: str, queries: list[PanelQuery], timeout_s: float = 60.0
) -> list[PanelQuery]:
    """The queries still returning no series after `timeout_s` (new series need a scrape or two)."""
    pending = list(queries)
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=prometheus_url, timeout=30) as prometheus:
        while pending:
            pending = [q for q in pending if not await query(prometheus, q.expr)]
            if not pending or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    return pending
