"""A user drags a video onto the web page, watches it reach 100 %, downloads it and compares.

Headless Chromium from Debian (`/usr/bin/chromium`, apt package `chromium`) driven by Playwright's
Python driver; nothing is downloaded at test time. The page talks to the real ingest API, which the
session pipeline serves on API_URL, and follows the job through server-sent events.
Set UPDATE_DOCS_SCREENSHOT=1 to refresh docs/web-ui.png from this run.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, async_playwright

from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from tests.e2e.pipeline import ServiceProcess
from tests.fixtures.media import probe, video_stream

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.minio,
    pytest.mark.postgres,
    pytest.mark.ffmpeg,
    pytest.mark.slow,
]

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

    payload = base64.b64encode(clip.read_bytes()).decode()
    await page.evaluate(DROP, ["holiday.mp4", payload])
    assert "holiday.mp4" in await page.inner_text("#drop-text")
    await page.select_option("#multiplier", "2")
    await page.select_option("#engine", "flow")
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

    href = await page.get_attribute("#download", "href")
    assert href == f"/api/download/{job_id}"
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
    assert shot.stat().st_size < 300_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)
