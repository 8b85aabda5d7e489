"""Crash points for fault tests: die at a named point once, the way a power cut or OOM kill would.

Set `CRASH_AT=<point>` and `CRASH_MARKER=<file>`: the first process to reach the point creates the
marker and exits at once (no cleanup, no commit); later ones pass, so a restarted service carries on.
Unset (always, outside tests), a crash point costs one comparison.
"""

from __future__ import annotations

import os

from infiniteflow_common.settings import CommonSettings


def crash_point(settings: CommonSettings, name: str) -> None:
    """Exit the process here if the settings name this point and it has not crashed here before."""
    if settings.crash_at != name or settings.crash_marker is None:
        return
    try:
        settings.crash_marker.touch(exist_ok=False)
    except FileExistsError:
        return
    os._exit(137)
