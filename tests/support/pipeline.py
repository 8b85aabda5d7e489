"""Runs the five services as real processes against the local stack, for end-to-end tests and the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def forget_stale_targets() -> None:
    """Remove the Prometheus targets of services that stopped (a killed one could not remove its own)."""
    from infiniteflow_common.runtime import sweep_stale_targets
    from infiniteflow_common.settings import CommonSettings

    directory = CommonSettings().prometheus_targets_dir
    if directory is not None:
        sweep_stale_targets(directory)


@dataclass
class ServiceProcess:
    """One running service and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def ready(self) -> bool:
        return self.log.exists() and '"service started"' in self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def lines(self, event: str, job_id: str) -> list[dict[str, Any]]:
        """This service's JSON log lines with this `event` that name the job."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if event in line and job_id in line:
                try:
                    found.append(json.loads(line[line.index("{") :]))
                except ValueError:
                    continue
        return found


def worker_lines(services: list[ServiceProcess], event: str, job_id: str) -> list[dict[str, Any]]:
    """Every worker's JSON log lines with this `event` for the job."""
    return [line for s in services if s.name.startswith("gpu_interp") for line in s.lines(event, job_id)]


def start_service(name: str, logdir: Path, env: dict[str, str], suffix: str = "") -> ServiceProcess:
    """Start `python -m services.<name>` with its output in `logdir/<name><suffix>.log`."""
    log = logdir / f"{name}{suffix}.log"
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"], cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT
    )
    return ServiceProcess(name + suffix, process, log)


@contextmanager
def running_pipeline(
    logdir: Path, workers: int = 2, only: dict[str, dict[str, str]] | None = None, **overrides: str
) -> Iterator[list[ServiceProcess]]:
    """All services up (two gpu_interp workers by default); stopped with SIGTERM afterwards.

    `overrides` are set for every service, `only[name]` for that service alone.
    """
    logdir.mkdir(parents=True, exist_ok=True)
    # LOCAL_WORKERS as `infiniteflow services up` sets it: each worker's memory budget is its share
    env = (
        os.environ
        | {"METRICS_PORT": "0", "PYTHONUNBUFFERED": "1", "LOCAL_WORKERS": str(max(1, workers))}
        | overrides
    )
    services = [
        start_service(name, logdir, env | (only or {}).get(name, {}))
        for name in ("ingest", "splitter", "muxer", "notifier")
    ]
    services += [
        start_service(
            "gpu_interp", logdir, env | {"WORKER_ID": f"worker-{i}-{uuid.uuid4().hex[:6]}"}, f"-{i}"
        )
        for i in range(1, workers + 1)
    ]
    try:
        deadline = time.monotonic() + 90
        while not all(s.ready() for s in services):
            dead = [s for s in services if not s.alive()]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited: {dead[0].log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"services not ready: {[s.name for s in services if not s.ready()]}")
            time.sleep(0.3)
        yield services
    finally:
        for service in services:
            if service.alive():
                service.process.send_signal(signal.SIGTERM)
        for service in services:
            try:
                service.process.wait(20)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait(5)
        forget_stale_targets()


@dataclass
class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that records every webhook it receives."""

    received: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        return [r for r in self.received if json.loads(r["body"]).get("data", {}).get("job_id") == job_id]


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """Serve a recording webhook endpoint for the duration of the block."""
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
            receiver.received.append(
                {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    receiver.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
