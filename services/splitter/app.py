"""Splitter composition root: `infiniteflow run splitter`."""

from __future__ import annotations

import asyncio

from infiniteflow_common.runtime import Runtime
from infiniteflow_common.topics import Topic
from services.splitter.config import SplitterSettings
from services.splitter.handlers import SplitHandler


def build(settings: SplitterSettings | None = None) -> Runtime:
    """The splitter process: one consumer on video.uploaded."""
    settings = settings or SplitterSettings()
    runtime = Runtime(settings, "splitter")
    handler = SplitHandler(
        settings=settings,
        deps=runtime.deps,
    )
    # Splitting a long source takes a while; allow it well past the default poll interval.
    runtime.consume(Topic.VIDEO_UPLOADED, handler, max_poll_interval_ms=1_800_000)
    return runtime


def main() -> None:
    """Run the splitter until SIGTERM."""
    raise SystemExit(asyncio.run(build().run()))
