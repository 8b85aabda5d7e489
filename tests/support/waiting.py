"""One way to wait: poll a condition until it holds or a deadline passes, then fail with what was last seen."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


def _held(value: Any, until: Callable[[Any], bool] | None) -> bool:
    return bool(value) if until is None else until(value)


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    timeout_s: float = ...,
    what: str = ...,
    *,
    until: Callable[[T], bool] | None = ...,
    interval_s: float = ...,
    fail: bool = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    timeout_s: float = ...,
    what: str = ...,
    *,
    until: Callable[[T], bool] | None = ...,
    interval_s: float = ...,
    fail: bool = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    timeout_s: float = 30.0,
    what: str = "",
    *,
    until: Callable[[Any], bool] | None = None,
    interval_s: float = 0.2,
    fail: bool = True,
) -> Any:
    """Call `probe` (sync or async) until its value is truthy, or `until(value)` holds; return that value.

    Past `timeout_s` it fails with `what` and the last value observed, so a timeout says where things stood;
    with `fail=False` it returns that last value instead, for a test that states its own assertion on it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if _held(value, until):
            return value
        if time.monotonic() > deadline:
            if not fail:
                return value
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what or probe}; last seen: {value!r}"
            )
        await asyncio.sleep(interval_s)


def eventually_sync(
    probe: Callable[[], T],
    timeout_s: float = 30.0,
    what: str = "",
    *,
    until: Callable[[T], bool] | None = None,
    interval_s: float = 0.2,
    fail: bool = True,
) -> T:
    """`eventually` for code outside an event loop (threads, subprocesses, log files)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if _held(value, until):
            return value
        if time.monotonic() > deadline:
            if not fail:
                return value
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what or probe}; last seen: {value!r}"
            )
        time.sleep(interval_s)
