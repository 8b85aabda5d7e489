"""The job of `make test-images`, run inside the service image (scripts/images.sh mounts this file).

A user's view of the containers: make the demo's sample clip with the image's FFmpeg, upload it
through the ingest container's API with a webhook to a receiver here, follow it to the end, verify
the signed webhook the notifier container sends, download the result and check it with ffprobe
(twice the frame rate, twice the frames, audio kept). Prints one JSON line; exits 1 on any failure.

Usage (in the image, host network, infra/local.env in the environment): python images_job.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import httpx
from rich.progress import Progress
from standardwebhooks import Webhook

from infiniteflow_common.settings import CommonSettings
from services.demo import make_sample, receive_webhooks, summary
from services.user_commands import follow, upload

MULTIPLIER = 2


def main(out: Path) -> int:
    settings = CommonSettings()
    sample = out / "sample.mp4"
    make_sample(sample)
    server, received = receive_webhooks()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    options = {"multiplier": str(MULTIPLIER), "engine": "rife", "webhook_url": hook}
    started = time.monotonic()
    with httpx.Client(base_url=settings.api_url, timeout=httpx.Timeout(30, write=600)) as client:
        with Progress(transient=True) as progress:
            job_id = upload(client, sample, options, progress)["job_id"]
        print(f"job {job_id} submitted (×{MULTIPLIER}, rife, webhook {hook})", flush=True)
        job = follow(client, job_id)
    report: dict[str, object] = {
        "job_id": job_id,
        "status": job.get("status"),
        "seconds": round(time.monotonic() - started, 1),
    }
    problems = []
    if job.get("status") not in ("completed", "completed_with_warnings"):
        problems.append(f"job ended {job.get('status')}: {job.get('error')}")
    else:
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            time.sleep(0.2)
        if not received:
            problems.append("no webhook arrived within 60 s")
        else:
            payload = Webhook(settings.webhook_secret.get_secret_value()).verify(
                received[0]["body"], received[0]["headers"]
            )
            report["webhook"] = f"{payload['type']}, signature verified"
            output = out / "output.mp4"
            with httpx.stream("GET", payload["data"]["output"]["url"]) as response, output.open("wb") as file:
                for block in response.iter_bytes():
                    file.write(block)
            before, after = summary(sample), summary(output)
            report["input"], report["output"] = before, after
            if Fraction(after["frame rate"]) != MULTIPLIER * Fraction(before["frame rate"]):
                problems.append(f"output frame rate {after['frame rate']}, input {before['frame rate']}")
            if int(after["frames"]) != MULTIPLIER * int(before["frames"]):
                problems.append(f"output has {after['frames']} frames, input {before['frames']}")
            if after["audio"] == "none":
                problems.append("the output lost the audio")
    server.shutdown()
    report["problems"] = problems
    print(json.dumps(report, ensure_ascii=False), flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
