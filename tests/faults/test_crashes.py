"""Crashes at the worst moments: after the output is uploaded but before it is recorded, and after a
receiver's 2xx but before the delivery is recorded. Nothing is lost; nothing is doubled but what a
receiver can dedupe by its `webhook-id`."""

from __future__ import annotations

import os
from pathlib import Path

from infiniteflow_common.settings import CommonSettings
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.faults import FAULT_SETTINGS, assert_one_good_output, run_job
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess, running_pipeline, start_service, webhook_receiver
from tests.support.waiting import eventually

pytestmark = WHOLE_PIPELINE


async def _crashed(service: ServiceProcess, timeout_s: float = 120) -> None:
    await eventually(
        lambda: not service.alive(), timeout_s, f"{service.name} to reach its crash point", interval_s=0.1
    )


def _restart(services: list[ServiceProcess], name: str, logdir: Path) -> ServiceProcess:
    env = os.environ | {"METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"} | FAULT_SETTINGS
    replacement = start_service(name, logdir, env, "-restarted")
    services.append(replacement)  # stopped with the rest
    return replacement


async def test_a_muxer_that_dies_after_uploading_but_before_recording_leaves_one_output(
    settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    crash = {"CRASH_AT": "muxer.after_upload", "CRASH_MARKER": str(tmp_path / "crashed")}
    with running_pipeline(tmp_path / "logs", **FAULT_SETTINGS, **crash) as services:
        key = f"faults/{unique}/mux.mp4"
        await run_job(settings, tmp_path, key, seconds=1)
        muxer = next(s for s in services if s.name == "muxer")
        await _crashed(muxer)
        _restart(services, "muxer", tmp_path / "logs")
        job = await wait_for_job(settings, key=key, timeout_s=120)
        await assert_one_good_output(settings, job, 30, tmp_path)


async def test_a_notifier_that_dies_after_a_2xx_redelivers_with_the_same_webhook_id(
    settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    crash = {
        "CRASH_AT": "notifier.after_delivery",
        "CRASH_MARKER": str(tmp_path / "crashed"),
        "WEBHOOK_TIMEOUT_S": "2",
    }
    with (
        webhook_receiver() as receiver,
        running_pipeline(tmp_path / "logs", **FAULT_SETTINGS, **crash) as services,
    ):
        key = f"faults/{unique}/hook.mp4"
        clip = await run_job(settings, tmp_path, key, seconds=1, webhook=receiver.url)
        assert clip
        notifier = next(s for s in services if s.name == "notifier")
        await _crashed(notifier)
        _restart(services, "notifier", tmp_path / "logs")
        job = await wait_for_job(settings, key=key)
        await eventually(
            lambda: len(receiver.for_job(str(job["id"]))) >= 2,
            90,
            "the unrecorded delivery to be retried",
            interval_s=0.5,
        )
    first, second = receiver.for_job(str(job["id"]))[:2]
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"], "receivers dedupe by webhook-id"
    assert first["body"] == second["body"]
