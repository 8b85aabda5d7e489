"""`infiniteflow submit`, `status` and `cancel`: the user's side of the HTTP API.

`submit` uploads through `POST /api/upload` (with an upload progress bar) and, with `--wait`, follows
the job on `GET /api/events/{job}` (server-sent events pushed by PostgreSQL NOTIFY) with a progress bar
until it is final, then prints the download URL. Exit status: 0 completed (or submitted), 1 failed
(or cancelled), 2 refused by the API. Where keys are required, pass `--api-key` or set
INFINITEFLOW_API_KEY.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from infiniteflow_common.events import PRIORITY_MAX, PRIORITY_MIN
from infiniteflow_common.settings import CommonSettings

console = Console()
FINAL = ("completed", "completed_with_warnings", "failed", "cancelled")
API_KEY_ENV = "INFINITEFLOW_API_KEY"
STREAM_RETRIES = 20


class _CountingReader:
    """A file wrapper that advances a progress bar as httpx reads the upload."""

    def __init__(self, file: IO[bytes], progress: Progress, task: TaskID) -> None:
        self.file, self.progress, self.task = file, progress, task

    def read(self, size: int = -1) -> bytes:
        block = self.file.read(size)
        self.progress.advance(self.task, len(block))
        return block

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def _api_url(api_url: str | None) -> str:
    return (api_url or CommonSettings().api_url).rstrip("/")


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _api_key_option() -> Any:
    return typer.Option(
        None, "--api-key", envvar=API_KEY_ENV, help="the tenant's key (where keys are required)"
    )


def _fail_response(response: httpx.Response) -> None:
    try:
        error = response.json()["error"]
        message = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    console.print(f"[red]refused ({response.status_code})[/] {message}")
    raise typer.Exit(2)


def upload(client: httpx.Client, video: Path, options: dict[str, str], progress: Progress) -> dict[str, Any]:
    """POST the video with its options; the API's 202 body (job_id, status_url, download_url)."""
    task = progress.add_task("upload", total=video.stat().st_size)
    with video.open("rb") as file:
        reader = _CountingReader(file, progress, task)
        response = client.post(
            "/api/upload",
            files={"file": (video.name, reader, "application/octet-stream")},  # type: ignore[dict-item]
            data=options,
        )
    if response.status_code != 202:
        _fail_response(response)
    body: dict[str, Any] = response.json()
    return body


def job_events(client: httpx.Client, job_id: str) -> Iterator[dict[str, Any]]:
    """The job's status documents as the API pushes them, until one is final (reconnects if cut)."""
    for _ in range(STREAM_RETRIES):
        try:
            with client.stream("GET", f"/api/events/{job_id}", timeout=httpx.Timeout(10, read=60)) as stream:
                if stream.status_code != 200:
                    stream.read()
                    _fail_response(stream)
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        job: dict[str, Any] = json.loads(line.removeprefix("data:").strip())
                        yield job
                        if job["status"] in FINAL:
                            return
        except httpx.TransportError as exc:
            console.print(f"[yellow]event stream interrupted ({exc!r}); reconnecting[/]")
            time.sleep(1)
    raise RuntimeError(f"lost the event stream of job {job_id} {STREAM_RETRIES} times")


def download_url(client: httpx.Client, job_id: str) -> str:
    """The presigned URL `GET /api/download` redirects to."""
    response = client.get(f"/api/download/{job_id}", follow_redirects=False)
    if response.status_code != 307:
        _fail_response(response)
    return response.headers["location"]


def follow(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """A progress bar over the job's stages until it is final; returns the final status document."""
    job: dict[str, Any] = {}
    columns = (TextColumn("{task.description:>14}"), BarColumn(), TextColumn("{task.percentage:>3.0f} %"))
    with Progress(*columns, TextColumn("{task.fields[chunks]}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("pending", total=100, chunks="")
        for job in job_events(client, job_id):
            chunks = job.get("chunks") or {}
            text = f"chunks {chunks['done']}/{chunks['total']}" if chunks.get("total") else ""
            if job.get("queue"):
                text = f"queued: {queue_line(job['queue'])}"
            bar.update(task, completed=job["progress"], description=job["status"], chunks=text)
    return job


def status_table(job: dict[str, Any]) -> Table:
    """The fields a user checks first."""
    table = Table(show_header=False, box=None)
    probe, chunks, error = job.get("probe") or {}, job.get("chunks") or {}, job.get("error")
    rows = {
        "job": job["job_id"],
        "status": f"{job['status']} ({job['progress']} %)",
        "priority": job.get("priority", 0),
        "source": f"{job['source']['bucket']}/{job['source']['key']}",
        "input": f"{probe.get('width')}×{probe.get('height')} at {probe.get('fps')} fps" if probe else "—",
        "output fps": job.get("output_fps") or "—",
        "chunks": f"{chunks.get('done', 0)}/{chunks.get('total') or '?'}",
        "created": job["timings"]["created_at"],
        "completed": job["timings"]["completed_at"] or "—",
    }
    if job.get("queue"):
        rows["queued"] = queue_line(job["queue"])
    if error:
        rows["error"] = f"[red]{error['code']}[/]: {error['message']}"
    for name, value in rows.items():
        table.add_row(f"[bold]{name}[/]", str(value))
    return table


def queue_line(queue: dict[str, Any]) -> str:
    """A queued job's place: `position 2 (1 job ahead), starts about 12:01 UTC (in 1 min 30 s)`."""
    from datetime import datetime

    ahead = queue["jobs_ahead"]
    start = datetime.fromisoformat(queue["estimated_start"])
    wait = round(queue["estimated_wait_s"])
    minutes, seconds = divmod(wait, 60)
    after = f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
    return (
        f"position {queue['position']} ({ahead} job{'' if ahead == 1 else 's'} ahead), "
        f"starts about {start:%H:%M} UTC (in {after})"
    )


def register(app: typer.Typer) -> None:
    """Add `submit` and `status` to the `infiniteflow` command."""

    @app.command()
    def submit(
        video: Annotated[
            Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="the video file")
        ],
        multiplier: int | None = typer.Option(None, "--multiplier", "-m", help="2, 4 or 8"),
        fps: str | None = typer.Option(None, "--fps", help="target frame rate, e.g. 60 or 60000/1001"),
        engine: str | None = typer.Option(None, "--engine", help="rife or flow (server default if unset)"),
        model: str | None = typer.Option(
            None, "--model", help="rife model: auto, hdv3 or v4.25 (server default if unset: auto)"
        ),
        webhook: str | None = typer.Option(None, "--webhook", help="URL to notify when done"),
        priority: int | None = typer.Option(
            None,
            "--priority",
            min=PRIORITY_MIN,
            max=PRIORITY_MAX,
            help="-50 to 50: higher goes first among your own jobs (server default if unset: 0)",
        ),
        wait: bool = typer.Option(False, "--wait", help="follow the job and print the download URL"),
        api_url: str | None = typer.Option(None, "--api-url", help="defaults to API_URL"),
        api_key: str | None = _api_key_option(),
    ) -> None:
        """Upload a video and start a job; with --wait, show its progress until done."""
        if multiplier is not None and fps is not None:
            raise typer.BadParameter("give --multiplier or --fps, not both")
        options = {
            name: str(value)
            for name, value in {
                "multiplier": multiplier,
                "target_fps": fps,
                "engine": engine,
                "model": model,
                "webhook_url": webhook,
                "priority": priority,
            }.items()
            if value is not None
        }
        base = _api_url(api_url)
        timeout = httpx.Timeout(30, write=600)
        with httpx.Client(base_url=base, timeout=timeout, headers=_headers(api_key)) as client:
            columns = (TextColumn("upload"), BarColumn(), DownloadColumn())
            with Progress(*columns, console=console) as progress:
                accepted = upload(client, video, options, progress)
            job_id = accepted["job_id"]
            console.print(f"job [cyan]{job_id}[/] {accepted['status']}: {base}{accepted['status_url']}")
            if not wait:
                console.print(f"follow it with [bold]infiniteflow status {job_id}[/]")
                return
            job = follow(client, job_id)
            if job.get("status") == "cancelled":
                console.print(f"[yellow]cancelled[/] at {job.get('progress')} %")
                raise typer.Exit(1)
            if job.get("status") not in ("completed", "completed_with_warnings"):
                error = job.get("error") or {}
                console.print(f"[red]failed[/] {error.get('code')}: {error.get('message')}")
                raise typer.Exit(1)
            console.print(f"[green]{job['status']}[/] in {_elapsed(job)}; download (presigned URL):")
            console.print(download_url(client, job_id), soft_wrap=True)

    @app.command()
    def status(
        job: Annotated[str, typer.Argument(help="the job id")],
        as_json: bool = typer.Option(False, "--json", help="print the API's JSON"),
        api_url: str | None = typer.Option(None, "--api-url", help="defaults to API_URL"),
        api_key: str | None = _api_key_option(),
    ) -> None:
        """Show a job's status, progress, error and timings."""
        with httpx.Client(base_url=_api_url(api_url), timeout=30, headers=_headers(api_key)) as client:
            response = client.get(f"/api/status/{job}")
        if response.status_code != 200:
            _fail_response(response)
        body = response.json()
        if as_json:
            console.print_json(data=body)
        else:
            console.print(status_table(body))
        if body["status"] in ("failed", "cancelled"):
            raise typer.Exit(1)

    @app.command()
    def cancel(
        job: Annotated[str, typer.Argument(help="the job id")],
        api_url: str | None = typer.Option(None, "--api-url", help="defaults to API_URL"),
        api_key: str | None = _api_key_option(),
    ) -> None:
        """Cancel a job that has not finished (again: no change). Exit 2 when it already finished."""
        with httpx.Client(base_url=_api_url(api_url), timeout=30, headers=_headers(api_key)) as client:
            response = client.post(f"/api/jobs/{job}/cancel")
        if response.status_code != 200:
            _fail_response(response)
        body = response.json()
        console.print(f"job [cyan]{body['job_id']}[/] [yellow]cancelled[/] at {body['progress']} %")


def _elapsed(job: dict[str, Any]) -> str:
    from datetime import datetime

    timings = job.get("timings") or {}
    if not timings.get("completed_at"):
        return "?"
    seconds = (
        datetime.fromisoformat(timings["completed_at"]) - datetime.fromisoformat(timings["created_at"])
    ).total_seconds()
    return f"{seconds:.1f} s"
