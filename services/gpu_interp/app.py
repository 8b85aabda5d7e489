"""gpu_interp composition root: `infiniteflow run gpu_interp`. Run several; they share chunk.ready."""

from __future__ import annotations

import asyncio
import os
import sys

from infiniteflow_common.runtime import Runtime
from infiniteflow_common.topics import Topic
from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.engine_registry import EngineCache
from services.gpu_interp.handlers import ChunkHandler
from services.gpu_interp.metrics import register_worker


def build(settings: WorkerSettings | None = None) -> Runtime:
    """A worker: one consumer in the `gpu_interp` group on chunk.ready, engines kept resident."""
    settings = settings or WorkerSettings()
    runtime = Runtime(settings, "gpu_interp")
    handler = ChunkHandler(
        settings=settings,
        deps=runtime.deps,
        engines=EngineCache(settings),
        stopping=runtime.stopping.is_set,
    )
    runtime.consume(Topic.CHUNK_READY, handler, max_poll_interval_ms=settings.max_poll_interval_ms)
    register_worker(settings.worker_id, settings.device)
    return runtime


def main() -> None:
    """Run the worker until SIGTERM.

    A chunk's computation runs in a thread that cannot be interrupted inside one engine call (a
    compiling backend converts the network for a new frame size in tens of seconds). Once the service
    has stopped — the chunk handed back, its record left uncommitted — the process exits without
    joining that thread, so stopping takes the grace period, not the grace period plus the call.
    """
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(build().run())
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
