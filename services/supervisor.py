"""`infiniteflow services up|down|status`: run the five services in the background on this machine.

Each service is a process with its pid in `.run/services/` and JSON logs in `.run/logs/`; a restarted
service's earlier logs are kept as `<name>.log.1` … `.3` (why the last one died is there).

`services up` starts one detached supervisor (`python -m services.supervisor`; pid, lock, what it runs
and its state in `.run/supervisor/`, JSON log in `.run/logs/supervisor.log`). The supervisor starts
the services as its children and restarts one that exits, with the backoff and crash-loop rule of
`services.restart_policy`. Decisions:

- the services run in sessions of their own, so they outlive the supervisor: a supervisor that dies
  (even SIGKILL) takes no service with it, only their restarts. `services status` says it is not
  running, and the next `services up` starts a new one that adopts the running services (it cannot know
  how an adopted service ends, only that it did) and starts the missing ones;
- one supervisor per `.run/`: it holds an exclusive lock on `.run/supervisor/lock` while it lives, so a
  second `services up` (even a concurrent one) never starts a second supervisor or duplicate services;
- `services down` (and `stop_all`) stops the supervisor first, then the services, so nothing restarts;
- a crash-looping service keeps being restarted at the longest delay, and `services status` says
  `crash-looping` with the last exit reason until one of its runs lasts a minute.

`start_all` (no supervisor) remains for the scripts that kill and restart services themselves (soak,
capacity, load tests).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from services.restart_policy import History, RestartPolicy, after_exit, exit_reason, ran_healthy

RUN = REPO_ROOT / ".run"
PIDS, LOGS = RUN / "services", RUN / "logs"
SERVICES = ("ingest", "splitter", "muxer", "notifier")

services_app = typer.Typer(no_args_is_help=True, help="Run the pipeline's services in the background.")


@dataclass(frozen=True)
class Layout:
    """Where the background services keep their files: `.run/` of the checkout, a temporary one in tests."""

    run: Path = RUN

    @property
    def pids(self) -> Path:
        return self.run / "services"

    @property
    def logs(self) -> Path:
        return self.run / "logs"

    @property
    def supervision(self) -> Path:
        return self.run / "supervisor"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"


DEFAULT = Layout()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _running(layout: Layout = DEFAULT) -> dict[str, int]:
    found = {}
    for path in sorted(layout.pids.glob("*.pid")) if layout.pids.exists() else []:
        try:
            pid = int(path.read_text())
        except (OSError, ValueError):  # being written, or removed meanwhile
            continue
        if _alive(pid):
            found[path.stem] = pid
        else:
            path.unlink(missing_ok=True)
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


def service_specs(
    workers: int = 2, env: dict[str, str] | None = None, command: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """What runs: name, command line and extra environment per service (`command` replaces every one's)."""
    names: list[tuple[str, str, dict[str, str]]] = [(s, s, {}) for s in SERVICES] + [
        (
            f"gpu_interp-{i}",
            "gpu_interp",
            # LOCAL_WORKERS: each worker's default memory budget is its share of the machine
            {
                "WORKER_ID": f"{os.uname().nodename}-worker-{i}",
                "METRICS_PORT": str(9112 + i),
                "LOCAL_WORKERS": str(workers),
            },
        )
        for i in range(1, workers + 1)
    ]
    return [
        {
            "name": name,
            "argv": list(command) if command else [sys.executable, "-m", f"services.{module}"],
            "env": (env or {}) | extra,
        }
        for name, module, extra in names
    ]


def _spawn(layout: Layout, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    name = spec["name"]
    log_path = layout.logs / f"{name}.log"
    rotate_log(log_path)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            spec["argv"], cwd=REPO_ROOT, env=os.environ | spec["env"], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    (layout.pids / f"{name}.pid").write_text(str(process.pid))
    return process


def start_all(
    workers: int = 2,
    env: dict[str, str] | None = None,
    *,
    layout: Layout = DEFAULT,
    command: Sequence[str] | None = None,
) -> dict[str, int]:
    """Start every service not already running, unsupervised; returns name → pid."""
    layout.pids.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(parents=True, exist_ok=True)
    running = _running(layout)
    for spec in service_specs(workers, env, command):
        if spec["name"] not in running:
            running[spec["name"]] = _spawn(layout, spec).pid
    return running


def supervisor_pid(layout: Layout = DEFAULT) -> int | None:
    """The pid of the supervisor of `layout`, or None when none runs (nobody holds its lock)."""
    lock_path = layout.supervision / "lock"
    if not lock_path.exists():
        return None
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            fcntl.flock(lock, fcntl.LOCK_UN)
            return None
    try:
        return int((layout.supervision / "pid").read_text())
    except (OSError, ValueError):  # it holds the lock and is about to write its pid
        return -1


def supervised_names(layout: Layout = DEFAULT) -> list[str]:
    """The services the supervisor of `layout` keeps (or was last told to keep)."""
    kept = _read_json(layout.supervision / "spec.json")
    return [spec["name"] for spec in kept] if isinstance(kept, list) else []


def supervise(
    workers: int = 2,
    env: dict[str, str] | None = None,
    *,
    layout: Layout = DEFAULT,
    command: Sequence[str] | None = None,
    timeout_s: float = 30,
) -> dict[str, int]:
    """Start the supervisor unless one runs; wait until each service it keeps runs (or has failed once).

    Returns name → pid of the services running. Idempotent: a running supervisor is kept, and so is
    what it runs; one asked for services it does not keep (`--workers 3` after 2) is replaced by one
    that keeps both (the running services are adopted, not restarted).
    """
    specs = service_specs(workers, env, command)
    for folder in (layout.pids, layout.logs, layout.supervision):
        folder.mkdir(parents=True, exist_ok=True)
    process = None
    while process is None:
        # Whoever holds the lock is the supervisor. We take it here and hand it to the process we start,
        # so from then on `supervisor_pid` and `stop_supervisor` see it: no window for a concurrent
        # `services up` or `services down` to miss it.
        with (layout.supervision / "lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                kept = _read_json(layout.supervision / "spec.json")
                kept = kept if isinstance(kept, list) else []
                wanted = {spec["name"] for spec in specs}
                if wanted <= {spec["name"] for spec in kept}:
                    break
                specs += [spec for spec in kept if spec["name"] not in wanted]
            else:
                (layout.supervision / "pid").unlink(missing_ok=True)  # a killed supervisor's
                _write_json(layout.supervision / "spec.json", specs)
                (layout.supervision / "state.json").unlink(missing_ok=True)
                rotate_log(layout.supervisor_log)
                with layout.supervisor_log.open("ab") as log:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "services.supervisor", str(layout.run), str(lock.fileno())],
                        cwd=REPO_ROOT, env=os.environ | (env or {}), stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True, pass_fds=(lock.fileno(),),
                    )  # fmt: skip
                (layout.supervision / "pid").write_text(str(process.pid))
                continue
        stop_supervisor(layout)  # outside the `with`: it waits for the lock we would otherwise hold
    names = supervised_names(layout)
    deadline = time.monotonic() + timeout_s
    while True:
        running = _running(layout)
        state = _read_json(layout.supervision / "state.json") or {}
        failed = {name for name, known in state.get("services", {}).items() if known.get("restarts")}
        if all(name in running or name in failed for name in names):
            return {name: running[name] for name in names if name in running}
        if process is not None and process.poll() is not None and supervisor_pid(layout) is None:
            raise RuntimeError(f"the supervisor stopped; see {layout.supervisor_log}")
        if time.monotonic() > deadline:
            missing = ", ".join(name for name in names if name not in running)
            raise RuntimeError(f"{missing} did not start; see {layout.logs} and {layout.supervisor_log}")
        time.sleep(0.1)


def wait_ready(names: list[str], timeout_s: float = 120, *, layout: Layout = DEFAULT) -> None:
    """Wait until each service has logged that it started."""
    deadline = time.monotonic() + timeout_s
    for name in names:
        log = layout.logs / f"{name}.log"
        while '"service started"' not in (log.read_text(errors="replace") if log.exists() else ""):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log}")
            time.sleep(0.3)


def stop_supervisor(layout: Layout = DEFAULT, timeout_s: float = 10) -> int | None:
    """SIGTERM the supervisor (SIGKILL if it lingers) and wait until it is gone; returns its pid."""
    pid = supervisor_pid(layout)
    deadline = time.monotonic() + timeout_s
    while pid == -1 and time.monotonic() < deadline:  # starting: wait for its pid
        time.sleep(0.05)
        pid = supervisor_pid(layout)
    if pid is None or pid == -1:
        return None
    os.kill(pid, signal.SIGTERM)
    while supervisor_pid(layout) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if supervisor_pid(layout) is not None:
        os.kill(pid, signal.SIGKILL)
        while supervisor_pid(layout) is not None:
            time.sleep(0.05)
    return pid


def stop_all(*, layout: Layout = DEFAULT) -> list[str]:
    """Stop the supervisor (so nothing restarts), then SIGTERM every service and wait; returns names stopped."""
    stop_supervisor(layout)
    running = _running(layout)
    for pid in running.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for name, pid in running.items():
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        (layout.pids / f"{name}.pid").unlink(missing_ok=True)
    from infiniteflow_common.runtime import sweep_stale_targets  # heavy (Kafka, SQL): not for the supervisor

    # a service killed above had no chance to remove its Prometheus target
    targets = CommonSettings().prometheus_targets_dir
    if targets is not None:
        sweep_stale_targets(targets)
    return list(running)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1))
    temporary.replace(path)  # readers never see half a file


@dataclass
class _Watched:
    """A service the supervisor keeps running: its process (None when adopted from an earlier run)."""

    spec: dict[str, Any]
    pid: int
    process: subprocess.Popen[bytes] | None
    started: float
    history: History = field(default_factory=History)
    last_exit: str | None = None
    restart_at: float | None = None

    def ended(self) -> tuple[bool, int | None]:
        if self.process is not None:
            code = self.process.poll()
            return code is not None, code
        return not _alive(self.pid) or _zombie(self.pid), None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def watch(
    layout: Layout,
    lock_fd: int | None = None,
    policy: RestartPolicy = RestartPolicy(),  # noqa: B008 (frozen)
) -> int:
    """The supervisor process: keep the services of `layout/supervisor/spec.json` running until SIGTERM.

    `lock_fd` is the supervisor lock, already taken by `supervise`; without it the lock is taken here.
    """
    from infiniteflow_common.observability import configure_logging, get_logger

    configure_logging("supervisor")
    log = get_logger()
    layout.supervision.mkdir(parents=True, exist_ok=True)
    lock = os.fdopen(lock_fd, "a") if lock_fd is not None else (layout.supervision / "lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op on the lock `supervise` handed us
    except BlockingIOError:
        log.info("another supervisor is running; this one exits")
        return 0
    (layout.supervision / "pid").write_text(str(os.getpid()))
    stopping: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    specs: list[dict[str, Any]] = json.loads((layout.supervision / "spec.json").read_text())
    running = _running(layout)
    watched: dict[str, _Watched] = {}
    for spec in specs:
        name = spec["name"]
        if name in running:
            watched[name] = _Watched(spec, running[name], None, time.monotonic())
            log.info("service adopted", name=name, pid=running[name])
        else:  # started by the loop below, at once
            watched[name] = _Watched(spec, 0, None, time.monotonic(), restart_at=time.monotonic())

    def save(state: str) -> None:
        now = time.monotonic()
        _write_json(
            layout.supervision / "state.json",
            {
                "supervisor": state,
                "pid": os.getpid(),
                "updated_at": datetime.now(UTC).isoformat(),
                "services": {
                    name: {
                        "pid": None if w.restart_at is not None else w.pid,
                        "restarts": w.history.restarts,
                        "last_exit": w.last_exit,
                        "crash_looping": w.history.crash_looping,
                        "restart_in_s": None
                        if w.restart_at is None
                        else round(max(0, w.restart_at - now), 1),
                    }
                    for name, w in watched.items()
                },
            },
        )

    save("running")
    log.info("supervisor started", services=list(watched))
    while not stopping:
        now = time.monotonic()
        changed = False
        for name, w in watched.items():
            if w.restart_at is not None:
                if now >= w.restart_at and not stopping:
                    try:
                        w.process = _spawn(layout, w.spec)
                    except OSError as error:  # out of memory or pids, a log we cannot write: try again later
                        w.history, delay = after_exit(w.history, ran_for_s=0, now=now, policy=policy)
                        w.last_exit, w.restart_at, changed = f"could not start: {error}", now + delay, True
                        log.error("service not restarted", name=name, error=str(error), retry_in_s=delay)
                        continue
                    w.pid, w.started, w.restart_at, changed = w.process.pid, now, None, True
                    event = "service restarted" if w.history.restarts else "service started"
                    log.info(event, name=name, pid=w.pid, restarts=w.history.restarts)
                continue
            ended, code = w.ended()
            if not ended:
                healthy = ran_healthy(w.history, now - w.started, policy)
                changed, w.history = changed or healthy != w.history, healthy
                continue
            pid_file = layout.pids / f"{name}.pid"
            if _read_json(pid_file) == w.pid:
                pid_file.unlink(missing_ok=True)
            w.last_exit = exit_reason(code)
            w.history, delay = after_exit(w.history, ran_for_s=now - w.started, now=now, policy=policy)
            w.restart_at, changed = now + delay, True
            log.warning(
                "service exited",
                name=name,
                pid=w.pid,
                reason=w.last_exit,
                ran_for_s=round(now - w.started, 1),
                restart_in_s=delay,
                restarts=w.history.restarts,
                crash_looping=w.history.crash_looping,
            )
        if changed:
            save("running")
        time.sleep(0.2)
    save("stopped")
    (layout.supervision / "pid").unlink(missing_ok=True)
    log.info("supervisor stopped; services it started keep running until `services down` stops them")
    return 0


def status_lines(layout: Layout = DEFAULT) -> list[str]:
    """One line per service (and one for the supervisor): up or down, restarts, last exit reason."""
    running = _running(layout)
    pid = supervisor_pid(layout)
    state = _read_json(layout.supervision / "state.json") or {}
    known = state.get("services", {})  # a dead supervisor's last word still says why services died
    spec = _read_json(layout.supervision / "spec.json")
    names = (
        [s["name"] for s in spec] if isinstance(spec, list) else [*SERVICES, "gpu_interp-1", "gpu_interp-2"]
    )
    if pid is None:
        lines = [
            f"{'supervisor':<14} not running: a service that exits stays down (`infiniteflow services up` starts it)"
        ]
    else:
        lines = [
            f"{'supervisor':<14} up, pid {pid}, restarts services that exit (log {layout.supervisor_log})"
        ]
    for name in [*names, *sorted(set(running) - set(names))]:
        service = known.get(name, {})
        if service.get("crash_looping"):
            word = "crash-looping"
            word += f", pid {running[name]}" if name in running else ""
        else:
            word = f"up, pid {running[name]}" if name in running else "down"
        if name not in running and service.get("restart_in_s") is not None:
            word += f", restarting in {service['restart_in_s']:g} s"
        line = f"{name:<14} {word}"
        if service:
            line += f"; restarts {service['restarts']}"
            if service.get("last_exit"):
                line += f"; last exit: {service['last_exit']}"
        lines.append(line)
    return lines


@services_app.command("up")
def up(workers: int = typer.Option(2, min=1, help="gpu_interp workers to run")) -> None:
    """Start the services under a supervisor that restarts one that exits (idempotent); wait until ready."""
    supervise(workers)
    wait_ready(supervised_names())
    for line in status_lines():
        typer.echo(line)
    typer.echo(f"logs in {LOGS}")


@services_app.command("down")
def down() -> None:
    """Stop the supervisor, then the services (nothing restarts)."""
    stopped = stop_all()
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@services_app.command("status")
def status() -> None:
    """List the services: up, down or crash-looping, with restarts and the last exit reason."""
    for line in status_lines():
        typer.echo(line)


if __name__ == "__main__":
    sys.exit(watch(Layout(Path(sys.argv[1])), int(sys.argv[2]) if len(sys.argv) > 2 else None))
