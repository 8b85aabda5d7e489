"""Muxer composition root: `infiniteflow run muxer`."""

from __future__ import annotations

import asyncio

from infiniteflow_common.runtime import Runtime
from infiniteflow_common.topics import Topic
from services.muxer.config import MuxerSettings
from services.muxer.handlers import MuxHandler


def build(settings: MuxerSettings | None = None) -> Runtime:
    """The muxer process: consumers on job.split and chunk.interpolated."""
    settings = settings or MuxerSettings()
    runtime = Runtime(settings, "muxer")
    handler = MuxHandler(
        settings=settings,
        deps=runtime.deps,
    )
    runtime.consume(Topic.CHUNK_INTERPOLATED, handler.on_chunk, max_poll_interval_ms=1_800_000)
    runtime.consume(Topic.JOB_SPLIT, handler.on_plan, max_poll_interval_ms=1_800_000)
    return runtime


def main() -> None:
    """Run the muxer until SIGTERM."""
    raise SystemExit(asyncio.run(build().run()))
