"""Fixtures shared by every test tier. They start nothing: `make test` brings the real stack up first.

A test that needs a server declares it with a marker (kafka, minio, postgres); when that server is not
reachable the test fails with a message pointing at `make up` — it never silently skips.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import settings as hypothesis_settings

from infiniteflow_common.settings import CommonSettings
from tests import stack_hygiene

# Shared fixtures live in tests/support and are registered here, the one conftest pytest lets do so.
pytest_plugins = ["tests.support.chunks", "tests.support.in_memory", "tests.support.queues"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Property tests check behaviour, never speed: on a shared, busy machine one example may take 50× its
# usual time, and Hypothesis's per-example deadline would call that a failure.
hypothesis_settings.register_profile("shared-machines", deadline=None)
hypothesis_settings.load_profile("shared-machines")


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


@pytest.fixture(scope="session", autouse=True)
def _own_the_stack(request: pytest.FixtureRequest, settings: CommonSettings) -> Iterator[None]:
    """A session with tests that need the real stack stops the background services first and removes
    what it made at the end (tests/stack_hygiene.py says what and why). Unit-only sessions touch nothing."""
    items = request.session.items
    if not any(item.get_closest_marker(m) for item in items for m in stack_hygiene.STACK_MARKERS):
        yield
        return
    stopped = stack_hygiene.stop_background_services()
    if stopped:
        _say(
            request,
            f"stopped the background services for this test run: {', '.join(stopped)} "
            "(`make demo` or `infiniteflow services up` starts them again)",
        )
    try:
        snapshot = stack_hygiene.take_snapshot(settings)
        # records left on the pipeline's topics by an earlier run belong to no test of this one
        if skipped := stack_hygiene.skip_leftover_messages(settings):
            _say(request, f"skipped {skipped} records earlier runs left unconsumed on the pipeline's topics")
    except Exception:  # the stack is down: each test that needs it fails with its own message
        yield
        return
    yield
    _say(request, f"test run cleaned up after itself: {stack_hygiene.restore(settings, snapshot)}")


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """A line on the terminal, past output capturing (it is about the session, not one test)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.ensure_newline()
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(line)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for names a test owns (topics, buckets, keys, groups)."""
    return uuid.uuid4().hex[:10]
