"""Prometheus' configuration and alert rules are valid, tested, and loaded by the running Prometheus.

promtool is the Debian package's own checker (installed with Prometheus by `make setup`); the last
test talks to the Prometheus `make up` started.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from tests.support.waiting import eventually_sync

PROMETHEUS_DIR = REPO_ROOT / "infra" / "prometheus"
ALERTS = {
    "JobFailureRatioHigh",
    "ConsumerLagGrowing",
    "DeadLetterQueueNotEmpty",
    "NoWorkerAlive",
    "WebhookEndpointFailing",
    "OutboxNotDraining",
}


def promtool(*args: str | Path) -> str:
    """Run promtool in the Prometheus config folder; fail the test with its output when it objects."""
    result = subprocess.run(
        ["promtool", *map(str, args)], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_the_scrape_configuration_and_its_rule_files_are_valid() -> None:
    output = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in output


def test_every_alert_rule_file_is_valid_and_has_the_alerts_operators_expect() -> None:
    files = sorted(PROMETHEUS_DIR.glob("rules/*.yml"))
    assert files
    output = promtool("check", "rules", *files)
    assert "SUCCESS: 6 rules found" in output


def test_each_alert_fires_on_its_story_and_stays_quiet_when_healthy() -> None:
    output = promtool("test", "rules", "tests/infiniteflow_test.yml")
    assert "SUCCESS" in output


def test_the_running_prometheus_loads_the_alerts_after_a_reload(settings: CommonSettings) -> None:
    url = settings.prometheus_url
    try:
        httpx.post(f"{url}/-/reload", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"Prometheus is not reachable at {url} ({exc}): run `make up` first", pytrace=False)

    def rules() -> set[str]:
        groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return {rule["name"] for group in groups for rule in group["rules"]}

    loaded = eventually_sync(
        rules, 30, "the alert rules", until=lambda names: names >= ALERTS, interval_s=0.5, fail=False
    )
    assert loaded >= ALERTS, loaded
