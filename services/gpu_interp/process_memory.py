"""This process's resident memory from Linux's /proc, and the machine's memory for a worker's budget.

The peak of one chunk is measured by resetting the kernel's high-water mark (`VmHWM`) when the chunk
starts: writing 5 to /proc/self/clear_refs (Linux ≥ 4.0) sets it to the current RSS. Where that is
refused (another OS, a locked-down /proc) `reset_peak` says so and the peak is the process's own.
"""

from __future__ import annotations

import re
from pathlib import Path

_PROC = Path("/proc/self")
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _status_kib(field: str, status: str | None = None) -> int:
    text = status if status is not None else (_PROC / "status").read_text()
    found = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def current_rss_bytes() -> int:
    """Resident memory now (VmRSS)."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Resident memory at its highest since the process started or `reset_peak` (VmHWM)."""
    return _status_kib("VmHWM") * 1024


def reset_peak() -> bool:
    """Start a new peak from the current RSS; False when the kernel refuses (the peak then keeps counting)."""
    try:
        (_PROC / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cgroup_limit_bytes(root: Path = _CGROUP_ROOT, proc: Path = _PROC) -> int | None:
    """The memory limit of this process's cgroup (v2 `memory.max`, v1 `memory.limit_in_bytes`), if any."""
    try:
        lines = (proc / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":
            candidates = [root / rel / "memory.max", root / "memory.max"]
        elif "memory" in controllers.split(","):
            candidates = [
                root / "memory" / rel / "memory.limit_in_bytes",
                root / "memory" / "memory.limit_in_bytes",
            ]
        else:
            continue
        for candidate in candidates:
            try:
                text = candidate.read_text().strip()
            except OSError:
                continue
            # "max" (v2) or a page-rounded 2^63 (v1) both mean no limit
            if text.isdigit() and int(text) < 1 << 60:
                return int(text)
    return None


def machine_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    """The machine's memory (MemTotal)."""
    return _status_kib("MemTotal", meminfo.read_text()) * 1024
