"""ffprobe runs under its resource limits without Python code between fork and exec."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from services.ingest.probe import ProbeLimits, limited

REPO = Path(__file__).resolve().parents[3]


def test_the_probe_limits_reach_the_child() -> None:
    limits = ProbeLimits(allowed_formats=("mov",), cpu_seconds=7, memory_bytes=512 * 1024**2)
    shown = subprocess.run(
        limited(limits, ["sh", "-c", "ulimit -t; ulimit -v; ulimit -f; ulimit -c"]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shown == ["7", str(512 * 1024), "0", "0"]


def test_no_process_is_started_with_a_preexec_fn() -> None:
    # Our services run threads (executors, database and Kafka clients): Python code between fork and
    # exec may deadlock on a lock another thread held at the fork.
    offenders = []
    for folder in ("services", "infiniteflow_common", "scripts"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.keyword) and node.arg == "preexec_fn":
                    offenders.append(f"{path.relative_to(REPO)}:{node.value.lineno}")
    assert offenders == []
