"""`infiniteflow demo` (what `make demo` runs): one real job from bucket drop to signed webhook."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from standardwebhooks import Webhook

from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from infiniteflow_common.storage import make_client
from services.supervisor import supervise, supervised_names, wait_ready

console = Console()


def make_sample(path: Path, seconds: int = 4) -> None:
    """A clip with audio and one scene cut half way: moving test pattern, then a zooming fractal."""
    half = seconds / 2
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate=30:duration={half}",
            "-f", "lavfi", "-i", f"mandelbrot=size=320x180:rate=30,trim=duration={half}",
            "-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=48000:duration={seconds}",
            "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-map", "2:a",
            "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", str(path),
        ],
        check=True,
    )  # fmt: skip


def receive_webhooks() -> tuple[ThreadingHTTPServer, list[dict[str, Any]]]:
    """A local endpoint recording webhooks (the user's receiver in real life)."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
            received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def summary(path: Path) -> dict[str, str]:
    """What a user checks first: size, rate, frames, duration, pixel format, audio."""
    info = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json", str(path)],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    audio = next((s for s in info["streams"] if s["codec_type"] == "audio"), None)
    return {
        "resolution": f"{video['width']}×{video['height']}",
        "frame rate": video["r_frame_rate"],
        "frames": video.get("nb_read_frames", "?"),
        "duration": f"{float(info['format']['duration']):.3f} s",
        "pixel format": video["pix_fmt"],
        "video codec": video["codec_name"],
        "audio": f"{audio['codec_name']} {audio.get('sample_rate', '')} Hz" if audio else "none",
    }


def demo(multiplier: int = 2, engine: str = "rife") -> None:
    """Run the main job end to end and show the result."""
    settings = CommonSettings()
    console.rule("[bold]InfiniteFlow demo")
    console.print("starting the services (ingest, splitter, 2× gpu_interp, muxer, notifier) …")
    supervise(workers=2)
    wait_ready(supervised_names())
    workdir = REPO_ROOT / ".run" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    sample = workdir / "sample.mp4"
    make_sample(sample)
    server, received = receive_webhooks()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    key = f"demo/{uuid.uuid4().hex[:8]}/sample clip.mp4"
    make_client(settings).fput_object(
        settings.incoming_bucket,
        key,
        str(sample),
        metadata={"multiplier": str(multiplier), "engine": engine, "webhook-url": hook},
    )
    console.print(
        f"dropped [cyan]s3://{settings.incoming_bucket}/{key}[/] (×{multiplier}, engine {engine}, webhook {hook})"
    )
    job_id = _wait_for_job_id(settings, key)
    status = _follow(settings, job_id)
    if status["status"] not in ("completed", "completed_with_warnings"):
        console.print(f"[red]job failed[/]: {status.get('error')}")
        raise typer.Exit(1)
    deadline = time.monotonic() + 60
    while not received and time.monotonic() < deadline:
        time.sleep(0.2)
    if not received:
        console.print("[red]no webhook arrived[/]")
        raise typer.Exit(1)
    payload = Webhook(settings.webhook_secret.get_secret_value()).verify(
        received[0]["body"], received[0]["headers"]
    )
    console.print(
        f"webhook [green]{payload['type']}[/] received; signature verified (webhook-id {received[0]['headers']['webhook-id']})"
    )
    output = workdir / "output.mp4"
    url = payload["data"]["output"]["url"]
    with httpx.stream("GET", url) as response, output.open("wb") as file:
        for block in response.iter_bytes():
            file.write(block)
    table = Table("", "input", "output", title="ffprobe: input vs output")
    before, after = summary(sample), summary(output)
    for row in before:
        table.add_row(row, before[row], after[row])
    console.print(table)
    console.print(f"output URL (presigned): [link={url}]{url}[/link]")
    console.print(f"local copy: {output}")
    _dashboards_line(settings)
    console.print("the services keep running (logs in .run/logs/); stop everything with [bold]make down[/]")
    server.shutdown()


def _dashboards_line(settings: CommonSettings) -> None:
    """How many Grafana panels have data now (all but the GPU ones on a CPU-only machine)."""
    import asyncio

    from services.dashboards import panel_queries, panels_without_data

    queries = panel_queries()
    try:
        empty = asyncio.run(panels_without_data(settings.prometheus_url, queries, timeout_s=45))
    except (httpx.HTTPError, AssertionError) as exc:
        console.print(f"[yellow]dashboards not checked[/]: Prometheus at {settings.prometheus_url}: {exc}")
        return
    gpu_only = [q for q in empty if q.needs_gpu]
    others = [q for q in empty if not q.needs_gpu]
    note = f" ({len(gpu_only)} GPU panels stay empty without a GPU)" if gpu_only else ""
    colour = "green" if not others else "yellow"
    console.print(
        f"dashboards ({', '.join(sorted({q.dashboard for q in queries}))}): "
        f"[{colour}]{len(queries) - len(empty)} of {len(queries)} panel queries have data[/]{note}"
    )
    for q in others:
        console.print(f"  [yellow]no data yet[/]: {q.dashboard} / {q.panel}")


def _wait_for_job_id(settings: CommonSettings, key: str) -> str:
    import asyncio

    import asyncpg

    async def lookup() -> str | None:
        connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
        try:
            value = await connection.fetchval("select id::text from jobs where source_key = $1", key)
            return str(value) if value else None
        finally:
            await connection.close()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job_id = asyncio.run(lookup())
        if job_id:
            return job_id
        time.sleep(0.5)
    console.print("[red]no job was created for the upload within 60 s[/]; see .run/logs/ingest.log")
    raise typer.Exit(1)


def _follow(settings: CommonSettings, job_id: str) -> dict[str, Any]:
    with Progress(
        TextColumn("[bold]{task.fields[stage]:<13}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[chunks]}"), TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("job", total=100, stage="pending", chunks="")
        while True:
            status: dict[str, Any] = httpx.get(f"{settings.api_url}/api/status/{job_id}", timeout=10).json()
            chunks = status.get("chunks") or {}
            progress.update(
                task, completed=status.get("progress", 0), stage=status.get("status", "?"),
                chunks=f"chunks {chunks.get('done', 0)}/{chunks.get('total') or '?'}",
            )  # fmt: skip
            if status.get("status") in ("completed", "completed_with_warnings", "failed", "cancelled"):
                return status
            time.sleep(0.5)
