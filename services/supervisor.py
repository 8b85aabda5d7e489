"""`infiniteflow services up|down|status`: run the five services in the background on this machine.

Each service is a detached process with its pid in `.run/services/` and JSON logs in `.run/logs/`;
a restarted service's earlier logs are kept as `<name>.log.1` … `.3` (why the last one died is there).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from infiniteflow_common.runtime import sweep_stale_targets
from infiniteflow_common.settings import REPO_ROOT, CommonSettings

RUN = REPO_ROOT / ".run"
PIDS, LOGS = RUN / "services", RUN / "logs"
SERVICES = ("ingest", "splitter", "muxer", "notifier")

services_app = typer.Typer(no_args_is_help=True, help="Run the pipeline's services in the background.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _running() -> dict[str, int]:
    found = {}
    for path in sorted(PIDS.glob("*.pid")) if PIDS.exists() else []:
        pid = int(path.read_text())
        if _alive(pid):
            found[path.stem] = pid
        else:
            path.unlink()
    return found


KEPT_LOGS = 3


def rotate_log(log: Path, keep: int = KEPT_LOGS) -> None:
    """Move `log` to `log.1` (and `.1` to `.2`, …, dropping the oldest) so a new process starts afresh."""
    if not log.exists() or log.stat().st_size == 0:
        return
    for n in range(keep - 1, 0, -1):
        older = log.with_name(f"{log.name}.{n}")
        if older.exists():
            older.replace(log.with_name(f"{log.name}.{n + 1}"))
    log.replace(log.with_name(f"{log.name}.1"))


def start_all(workers: int = 2, env: dict[str, str] | None = None) -> dict[str, int]:
    """Start every service not already running; returns name → pid."""
    PIDS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    running = _running()
    names: list[tuple[str, str, dict[str, str]]] = [(s, s, {}) for s in SERVICES] + [
        (
            f"gpu_interp-{i}",
            "gpu_interp",
            {"WORKER_ID": f"{os.uname().nodename}-worker-{i}", "METRICS_PORT": str(9112 + i)},
        )
        for i in range(1, workers + 1)
    ]
    for name, module, extra in names:
        if name in running:
            continue
        rotate_log(LOGS / f"{name}.log")
        log = (LOGS / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{module}"],
            cwd=REPO_ROOT, env=os.environ | (env or {}) | extra, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        (PIDS / f"{name}.pid").write_text(str(process.pid))
        running[name] = process.pid
    return running


def wait_ready(names: list[str], timeout_s: float = 120) -> None:
    """Wait until each service has logged that it started."""
    deadline = time.monotonic() + timeout_s
    for name in names:
        log = LOGS / f"{name}.log"
        while '"service started"' not in (log.read_text(errors="replace") if log.exists() else ""):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log}")
            time.sleep(0.3)


def stop_all() -> list[str]:
    """SIGTERM every running service and wait for it; returns the names stopped."""
    running = _running()
    for pid in running.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for name, pid in running.items():
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        (PIDS / f"{name}.pid").unlink(missing_ok=True)
    # a service killed above had no chance to remove its Prometheus target
    targets = CommonSettings().prometheus_targets_dir
    if targets is not None:
        sweep_stale_targets(targets)
    return list(running)


@services_app.command("up")
def up(workers: int = typer.Option(2, min=1, help="gpu_interp workers to run")) -> None:
    """Start the services (idempotent) and wait until they are ready."""
    running = start_all(workers)
    wait_ready(list(running))
    for name, pid in running.items():
        typer.echo(f"{name:<14} pid {pid:<8} log {LOGS / (name + '.log')}")


@services_app.command("down")
def down() -> None:
    """Stop the services."""
    stopped = stop_all()
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@services_app.command("status")
def status() -> None:
    """List running services."""
    running = _running()
    for name in [*SERVICES, "gpu_interp-1", "gpu_interp-2"]:
        typer.echo(f"{name:<14} {'up, pid ' + str(running[name]) if name in running else 'down'}")
