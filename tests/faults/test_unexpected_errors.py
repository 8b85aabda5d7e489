"""An error nobody classified, repeatable (a codec library's ValueError, a cuDNN RuntimeError), fails its
own job and nothing else: the service that hit it keeps serving, no process dies or crash-loops, and the
user hears a generic message while the log carries the error with the job id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infiniteflow_common.classify import INTERNAL_MESSAGE
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.faults import FAULT_SETTINGS, assert_one_good_output, chunk_rows, run_job
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess, running_pipeline, webhook_receiver

pytestmark = WHOLE_PIPELINE

# retries of an unexpected error stay short: ten tries within about ten seconds
FAST_RETRIES = {"RETRY_MAX_DELAY_S": "2"}


def _log_lines(service: ServiceProcess) -> list[dict[str, Any]]:
    lines = []
    for line in service.log.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


async def test_a_muxer_error_nobody_classified_fails_that_job_with_e_internal_and_the_muxer_completes_the_next(
    settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    bad_key, good_key = f"faults/{unique}/bad-mux.mp4", f"faults/{unique}/good-mux.mp4"
    inject = {"CRASH_AT": "muxer.assemble", "CRASH_MATCH": bad_key, "CRASH_RAISE": "ValueError"}
    (tmp_path / "bad").mkdir()
    (tmp_path / "good").mkdir()
    with (
        webhook_receiver() as receiver,
        running_pipeline(tmp_path / "logs", **FAULT_SETTINGS, **FAST_RETRIES, **inject) as services,
    ):
        await run_job(settings, tmp_path / "bad", bad_key, seconds=1, webhook=receiver.url)
        failed = await wait_for_job(settings, key=bad_key, timeout_s=180)
        assert (failed["status"], failed["error_code"]) == ("failed", "E_INTERNAL"), failed
        assert failed["error_message"].startswith(INTERNAL_MESSAGE)
        assert "ValueError" not in failed["error_message"]
        assert "fault injected" not in failed["error_message"]
        left = list(
            make_client(settings).list_objects(settings.work_bucket, f"{failed['id']}/", recursive=True)
        )
        assert left == [], "the failed job's work objects go with it"

        await run_job(settings, tmp_path / "good", good_key, seconds=1)
        good = await wait_for_job(settings, key=good_key, timeout_s=180)
        await assert_one_good_output(settings, good, 30, tmp_path / "good")

        muxer = next(s for s in services if s.name == "muxer")
        assert all(s.alive() for s in services), [s.name for s in services if not s.alive()]
        webhooks = [json.loads(r["body"]) for r in receiver.for_job(str(failed["id"]))]
    assert webhooks, "the failure was announced"
    assert all(w["data"]["error"]["code"] == "E_INTERNAL" for w in webhooks)
    assert all(w["data"]["error"]["message"].startswith(INTERNAL_MESSAGE) for w in webhooks)
    errors = [
        line
        for line in _log_lines(muxer)
        if line.get("job_id") == str(failed["id"]) and "ValueError" in str(line.get("error", ""))
    ]
    assert any(line.get("code") == "E_INTERNAL" for line in errors), "the error is logged with its job"
    assert any("fault injected at muxer.assemble" in str(line.get("error")) for line in errors)


async def test_a_worker_error_nobody_classified_poisons_only_its_chunk_and_the_workers_go_on(
    settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    bad_key, good_key = f"faults/{unique}/bad-gpu.mp4", f"faults/{unique}/good-gpu.mp4"
    inject = {
        "CRASH_AT": "gpu_interp.interpolate",
        "CRASH_MATCH": f"{bad_key}#0",
        "CRASH_RAISE": "RuntimeError",
        "CHUNK_MAX_ATTEMPTS": "2",
    }
    (tmp_path / "bad").mkdir()
    (tmp_path / "good").mkdir()
    with running_pipeline(tmp_path / "logs", **FAULT_SETTINGS, **FAST_RETRIES, **inject) as services:
        await run_job(settings, tmp_path / "bad", bad_key, seconds=1)
        failed = await wait_for_job(settings, key=bad_key, timeout_s=180)
        assert (failed["status"], failed["error_code"]) == ("failed", "E_CHUNK_POISON"), failed
        assert "chunk 0" in failed["error_message"]
        assert "all 3 attempts" in failed["error_message"]
        assert "RuntimeError" not in failed["error_message"]

        await run_job(settings, tmp_path / "good", good_key, seconds=1)
        good = await wait_for_job(settings, key=good_key, timeout_s=180)
        await assert_one_good_output(settings, good, 30, tmp_path / "good")
        assert all(s.alive() for s in services), "no worker died: nothing to crash-loop"
        workers = [s for s in services if s.name.startswith("gpu_interp")]

    rows = await chunk_rows(settings, failed["id"])
    assert (rows[0]["status"], rows[0]["attempts"]) == ("failed", 4), (
        "two tries, the conservative one, poison"
    )
    logged = [
        line
        for worker in workers
        for line in _log_lines(worker)
        if line.get("job_id") == str(failed["id"]) and "RuntimeError" in str(line.get("error", ""))
    ]
    assert len([line for line in logged if line.get("event", "").startswith("chunk try failed")]) == 3
