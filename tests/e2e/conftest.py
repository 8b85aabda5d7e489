"""End-to-end fixtures: the whole pipeline as real processes on the real stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pipeline import ServiceProcess, WebhookReceiver, running_pipeline, webhook_receiver


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    """Ingest, splitter, two gpu_interp workers, muxer and notifier, with short chunks so jobs spread.

    Module-scoped: the services stop before the next module, so no pipeline consumer (the notifier's
    delivery loop above all) runs beside the integration tests, which drive handlers themselves.
    """
    logs = tmp_path_factory.mktemp("service-logs")
    with running_pipeline(logs, CHUNK_FRAMES="10", SWEEPER_INTERVAL_S="3", SWEEPER_MIN_AGE_S="5") as services:
        yield services
    print(f"service logs: {logs}")


@pytest.fixture(scope="module")
def webhooks() -> Iterator[WebhookReceiver]:
    """A webhook endpoint that records what it receives."""
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
