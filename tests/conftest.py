"""Fixtures shared by every test tier. They start nothing: `make test` brings the real stack up first.

A test that needs a server declares it with a marker (kafka, minio, postgres); when that server is not
reachable the test fails with a message pointing at `make up` — it never silently skips.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from infiniteflow_common.settings import CommonSettings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def settings() -> CommonSettings:
    """The local stack's settings (infra/local.env plus the environment)."""
    return CommonSettings()


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _require_servers(request: pytest.FixtureRequest, settings: CommonSettings) -> None:
    needs = {
        "kafka": settings.kafka_bootstrap,
        "minio": urlsplit(settings.s3_endpoint).netloc,
        "postgres": urlsplit(settings.database_url.get_secret_value().replace("+asyncpg", "")).netloc.split(
            "@"
        )[-1],
    }
    for marker, hostport in needs.items():
        if request.node.get_closest_marker(marker) and not _reachable(hostport):
            pytest.fail(f"{marker} is not reachable at {hostport}: run `make up` first", pytrace=False)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for names a test owns (topics, buckets, keys, groups)."""
    return uuid.uuid4().hex[:10]
