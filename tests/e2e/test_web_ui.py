"""A user drags a video onto the web page, watches it reach 100 %, downloads it and compares; with keys
required, the page asks for one, keeps it for the tab, lists the user's jobs and cancels one.

Headless Chromium from Debian (`/usr/bin/chromium`, apt package `chromium`) driven by Playwright's
Python driver; nothing is downloaded at test time. The page talks to the real ingest API, which the
session pipeline serves on API_URL, and follows the job through server-sent events.
Set UPDATE_DOCS_SCREENSHOT=1 to refresh docs/web-ui.png from this run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright
from standardwebhooks import Webhook

from infiniteflow_common import tenants
from infiniteflow_common.db import make_engine, session_factory, transaction
from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from tests.support.clips import panning_clip, probe, video_stream
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.jobs import job_row
from tests.support.pipeline import ServiceProcess, WebhookReceiver, start_service
from tests.support.waiting import eventually

pytestmark = WHOLE_PIPELINE

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = REPO_ROOT / "docs" / "web-ui.png"
JOB_TIMEOUT_MS = 240_000

# Drops `bytes` as a file on the drop zone the way a browser does for a real drag from the desktop.
DROP = """([name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: "video/mp4"}));
  const zone = document.getElementById("drop-zone");
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  }
}"""


def sample_clip(path: Path) -> Path:
    """One second of FFmpeg's moving test pattern with a tone: recognisable in the screenshot and
    small once it is a PNG (random textures are not)."""
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=1",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1",
            "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path


@pytest.fixture
def chromium() -> Path:
    """The Debian package's browser binary."""
    assert CHROMIUM.exists(), "install Debian's chromium (apt-get install chromium; `make setup` does)"
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path, tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Debian's Chromium, headless, with a new empty profile."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(chromium),
            headless=True,
            args=FLAGS,
            viewport={"width": 960, "height": 800},
            device_scale_factor=1,
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            await context.close()


async def test_drop_a_video_on_the_page_follow_it_to_100_percent_and_download_it(
    pipeline: list[ServiceProcess],
    browser: BrowserContext,
    settings: CommonSettings,
    workdir: Path,
) -> None:
    clip = sample_clip(workdir / "holiday.mp4")
    page = await browser.new_page()
    await page.goto(f"{settings.api_url}/")
    await page.wait_for_function("document.body.dataset.state === 'idle'")
    # every option the API describes is on the form, with the API's defaults
    for field in ("#multiplier", "#target-fps", "#engine", "#quality", "#codec", "#crf", "#bitrate", "#preset",
                  "#dedupe", "#webhook-url", "#priority"):  # fmt: skip
        assert await page.locator(field).count() == 1, field
    assert await page.input_value("#quality") == "fast"
    assert await page.input_value("#priority") == "0"
    assert await page.is_hidden("#target-fps")

    payload = base64.b64encode(clip.read_bytes()).decode()
    await page.evaluate(DROP, ["holiday.mp4", payload])
    assert "holiday.mp4" in await page.inner_text("#drop-text")
    await page.select_option("#multiplier", "2")
    await page.select_option("#engine", "flow")
    await page.select_option("#codec", "h264")
    await page.fill("#crf", "20")
    await page.fill("#priority", "10")
    await page.click("#submit")

    await page.wait_for_function(
        "['completed', 'failed'].includes(document.body.dataset.state)", timeout=JOB_TIMEOUT_MS
    )
    assert await page.get_attribute("body", "data-state") == "completed", await page.inner_text("#error")
    assert await page.eval_on_selector("#progress", "p => p.value") == 100
    assert await page.inner_text("#progress-text") == "100 %"
    seen = await page.evaluate("window.progressSeen.filter(p => p > 0)")
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert len(set(seen)) >= 2, f"progress was not live: {seen}"
    job_id = await page.inner_text("#job-id")
    assert await page.inner_text("#job-priority") == "priority 10"

    href = await page.get_attribute("#download", "href")
    assert href == f"/api/download/{job_id}"
    # the list of recent jobs shows it, finished, with its download
    row = f"#jobs-body tr[data-job-id='{job_id}']"
    await page.wait_for_selector(f"{row}[data-status='completed'] a", timeout=15_000)
    assert await page.get_attribute(f"{row} a", "href") == href
    response = await page.request.get(f"{settings.api_url}{href}")  # follows the 307 to MinIO
    assert response.ok, response.status
    output = workdir / "downloaded.mp4"
    output.write_bytes(await response.body())
    result = video_stream(probe(output))
    assert Fraction(result["r_frame_rate"]) == 2 * Fraction(video_stream(probe(clip))["r_frame_rate"])

    # Before/after: both videos loaded and shown at the same moment.
    await page.wait_for_function(
        "['before', 'after'].every(id => document.getElementById(id).readyState >= 2)", timeout=30_000
    )
    await page.fill("#moment", "500")
    await page.dispatch_event("#moment", "input")
    await page.wait_for_function(
        "Math.abs(document.getElementById('before').currentTime - document.getElementById('after').currentTime)"
        " < 0.05 && document.getElementById('after').currentTime > 0"
    )
    await page.wait_for_function(
        "['before', 'after'].every(id => !document.getElementById(id).seeking)", timeout=10_000
    )
    shot = workdir / "web-ui.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size < 400_000  # the job list below shows at most 10 rows
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


@pytest.fixture(scope="module")
def keyed_api(pipeline: list[ServiceProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second ingest that requires API keys, on its own port, beside the module's pipeline."""
    port = _free_port()
    logdir = tmp_path_factory.mktemp("keyed-ingest")
    env = os.environ | {
        "METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
        "API_AUTH_REQUIRED": "true",
        "API_PORT": str(port),
    }
    service = start_service("ingest", logdir, env, "-keyed")
    try:
        deadline = time.monotonic() + 60
        while not service.ready() and service.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert service.ready(), service.log.read_text()[-2000:]
        yield f"http://127.0.0.1:{port}"
    finally:
        service.process.send_signal(signal.SIGTERM)
        service.process.wait(20)


async def _tenant_key(settings: CommonSettings) -> str:
    engine = make_engine(settings.database_url.get_secret_value())
    try:
        async with transaction(session_factory(engine)) as session:
            tenant_id = f"web-{uuid.uuid4().hex[:8]}"
            await tenants.create_tenant(session, tenant_id)
            return (await tenants.issue_key(session, tenant_id)).secret
    finally:
        await engine.dispose()


async def _drop(page: Page, clip: bytes, name: str) -> None:
    await page.evaluate(DROP, [name, base64.b64encode(clip).decode()])


async def test_with_keys_required_the_page_asks_for_one_lists_the_users_jobs_and_cancels_one(
    pipeline: list[ServiceProcess],
    keyed_api: str,
    webhooks: WebhookReceiver,
    browser: BrowserContext,
    settings: CommonSettings,
    workdir: Path,
) -> None:
    key = await _tenant_key(settings)
    long_clip = panning_clip(workdir / "long-take.mp4", width=320, height=180, seconds=4).path.read_bytes()
    page = await browser.new_page()
    await page.goto(f"{keyed_api}/")
    await page.wait_for_function("document.body.dataset.state === 'idle'")
    await page.wait_for_selector("#jobs-error:not([hidden])")
    assert "needs an API key" in await page.inner_text("#jobs-error")

    # without a key the upload is refused with a message saying what to do
    await _drop(page, long_clip, "long-take.mp4")
    await page.click("#submit")
    await page.wait_for_function("document.body.dataset.state === 'refused'")
    message = await page.inner_text("#form-error")
    assert "needs an API key" in message, message
    assert "E_AUTH_REQUIRED" in message

    # with a key (kept for this tab only) it runs, and appears in the list
    await page.fill("#api-key", "ifk_wrong_key")
    await page.click("#submit")
    await page.wait_for_function("document.body.dataset.state === 'refused'")
    assert "E_AUTH_INVALID" in await page.inner_text("#form-error")
    await page.fill("#api-key", key)
    assert await page.evaluate("sessionStorage.getItem('infiniteflow.apiKey')") == key
    await page.select_option("#multiplier", "8")
    await page.select_option("#engine", "flow")
    await page.fill("#webhook-url", webhooks.url)
    await page.click("#submit")
    await page.wait_for_function("document.body.dataset.state === 'running'")
    job_id = await page.inner_text("#job-id")
    row = f"#jobs-body tr[data-job-id='{job_id}']"
    await page.wait_for_selector(row, timeout=10_000)
    assert await page.locator("#jobs-body tr").count() == 1, "only this tenant's jobs are listed"

    # cancel from the list, with the keyboard
    button = page.get_by_role("button", name="Cancel long-take.mp4")
    await button.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_function("document.body.dataset.state === 'cancelled'", timeout=15_000)
    await page.wait_for_selector(f"{row}[data-status='cancelled']", timeout=10_000)
    assert await page.locator(f"{row} button").count() == 0, "a cancelled job offers no cancel"
    assert "cancelled" in await page.inner_text(f"{row} td.status")

    # the signed job.cancelled webhook arrives; the job stays cancelled while its chunks drain
    await eventually(lambda: bool(webhooks.for_job(job_id)), 60, "the job.cancelled webhook")
    [hook] = webhooks.for_job(job_id)
    message_body = Webhook(settings.webhook_secret.get_secret_value()).verify(hook["body"], hook["headers"])
    assert message_body["type"] == "job.cancelled"
    assert message_body["data"]["job_id"] == job_id
    await asyncio.sleep(10)
    job = await job_row(settings, job_id=job_id)
    assert job is not None
    assert (job["status"], job["completed_at"], job["output_key"]) == ("cancelled", None, None)
    assert json.loads(hook["body"])["data"]["status"] == "cancelled"

    # the key survives a reload of the tab; a new tab of a fresh browser session does not have it
    await page.reload()
    await page.wait_for_function("document.body.dataset.state === 'idle'")
    assert await page.input_value("#api-key") == key
    await page.wait_for_selector(f"{row}[data-status='cancelled']")
    await page.click("#forget-key")
    assert await page.evaluate("sessionStorage.getItem('infiniteflow.apiKey')") is None
