"""Fault tests run the pipeline in their own processes (a fresh one per test) so they can kill parts of it.

They run in a pytest session of their own (`make test-faults`), never beside the e2e session's pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faults import FAULT_SETTINGS
from tests.support.pipeline import ServiceProcess, running_pipeline


@pytest.fixture
def fresh_pipeline(tmp_path: Path) -> Iterator[dict[str, ServiceProcess]]:
    """All services, two workers, started for this test only; keyed by name (gpu_interp-1, gpu_interp-2)."""
    with running_pipeline(tmp_path / "logs", **FAULT_SETTINGS) as services:
        yield {s.name: s for s in services}
