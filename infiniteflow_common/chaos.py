"""Crash points for fault tests: die at a named point, the way a power cut or OOM kill would.

Set `CRASH_AT=<point>` and `CRASH_MARKER=<file>`: the first process to reach the point creates the
marker and exits at once (no cleanup, no commit); later ones pass, so a restarted service carries on.
Or set `CRASH_AT=<point>` and `CRASH_MATCH=<item>`: every process that reaches the point with that
item (a point names what it works on, e.g. a chunk as `<source key>#<index>`) is SIGKILLed, every
time — a poison input that kills whoever touches it. With `CRASH_MATCH` and `CRASH_RAISE=<built-in
exception>` (`ValueError`, `RuntimeError`, …) the point raises that exception for the item instead,
every time: an error nobody classified, repeatable, such as a codec library's or the GPU's. Unset
(always, outside tests), a crash point costs one comparison.
"""

from __future__ import annotations

import builtins
import os
import signal

from infiniteflow_common.settings import CommonSettings


def crash_point(settings: CommonSettings, name: str, item: str | None = None) -> None:
    """Die here if the settings name this point: once (marker), or every time for `item` (match)."""
    if settings.crash_at != name:
        return
    if settings.crash_match is not None:
        if item != settings.crash_match:
            return
        if settings.crash_raise is not None:
            raise injected(settings.crash_raise, name, item)
        os.kill(os.getpid(), signal.SIGKILL)
        return
    if settings.crash_marker is None:
        return
    try:
        settings.crash_marker.touch(exist_ok=False)
    except FileExistsError:
        return
    os._exit(137)


def injected(type_name: str, point: str, item: str) -> Exception:
    """The built-in exception `type_name` a crash point raises for `item` (`CRASH_RAISE`)."""
    kind = getattr(builtins, type_name, None)
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        raise ValueError(f"CRASH_RAISE={type_name!r} is not a built-in exception")
    return kind(f"fault injected at {point} for {item}")
