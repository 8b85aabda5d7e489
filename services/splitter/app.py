"""Splitter composition root: `infiniteflow run splitter`."""

from __future__ import annotations

import asyncio

from infiniteflow_common.runtime import Runtime
from infiniteflow_common.topics import Topic
from services.splitter.config import SplitterSettings
from services.splitter.handlers import SplitHandler, SplitPlanner


def build(settings: SplitterSettings | None = None) -> Runtime:
    """The splitter process: a consumer recording split requests, and the planners that run them."""
    settings = settings or SplitterSettings()
    runtime = Runtime(settings, "splitter")
    planner = SplitPlanner(settings=settings, deps=runtime.deps)
    handler = SplitHandler(deps=runtime.deps, wake=planner.wake)
    # The consumer only records requests (the passes run as leased background work): no long poll gap.
    runtime.consume(Topic.VIDEO_UPLOADED, handler, max_poll_interval_ms=settings.max_poll_interval_ms)
    runtime.background(planner.run)
    return runtime


def main() -> None:
    """Run the splitter until SIGTERM."""
    raise SystemExit(asyncio.run(build().run()))
