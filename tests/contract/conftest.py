"""Contract tests: pure checks of `schemas/` and the codec, no servers."""

from __future__ import annotations

import pytest

from infiniteflow_common.avro import SchemaCatalog


@pytest.fixture(scope="session")
def catalog() -> SchemaCatalog:
    """The repository's real schema folder, parsed once."""
    return SchemaCatalog.load()
