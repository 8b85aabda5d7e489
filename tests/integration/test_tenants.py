"""Tenants on the real stack: API keys, jobs kept apart, bucket prefixes, rate limits, CORS."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col
from typer.testing import CliRunner

from infiniteflow_common import tenants
from infiniteflow_common.db import ApiKey, Job, Tenant, transaction
from infiniteflow_common.runtime import Runtime
from services.cli import app as cli
from services.ingest.config import IngestSettings
from services.ingest.start import object_record
from tests.integration.ingest_support import (
    api_client,
    isolated_settings,
    private_job_topics,
    private_runtime,
    starter_for,
)
from tests.support.clips import video

pytestmark = [pytest.mark.kafka, pytest.mark.minio, pytest.mark.postgres, pytest.mark.ffmpeg]

SETTINGS = isolated_settings(api_auth_required=True, api_rate_limit_per_minute=1000)


@pytest.fixture(scope="module")
def topics() -> Iterator[tuple[str, str]]:
    with private_job_topics(SETTINGS, "tenants") as pair:
        yield pair


@pytest.fixture(scope="module")
async def runtime() -> AsyncIterator[Runtime]:
    async with private_runtime(SETTINGS) as rt:
        yield rt


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return video(tmp_path_factory.mktemp("tenants") / "clip.mp4", seconds=1).read_bytes()


def _client(
    runtime: Runtime, topics: tuple[str, str], settings: IngestSettings = SETTINGS, **deps: Any
) -> httpx.AsyncClient:
    return api_client(runtime, settings, topics, **deps)


@pytest.fixture
async def client(runtime: Runtime, topics: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(runtime, topics) as c:
        yield c


async def _tenant(runtime: Runtime, rate_limit: int | None = None) -> tuple[str, str]:
    """A new tenant and its key: (tenant id, secret)."""
    tenant_id = f"t-{uuid.uuid4().hex[:10]}"
    async with transaction(runtime.sessions) as session:
        await tenants.create_tenant(session, tenant_id, rate_limit_per_minute=rate_limit)
        issued = await tenants.issue_key(session, tenant_id)
    return tenant_id, issued.secret


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_a_request_without_a_key_is_refused_with_a_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/api/status/{uuid.uuid4()}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "E_AUTH_REQUIRED"
    assert response.headers["www-authenticate"].startswith("Bearer")
    upload = await client.post("/api/upload", files={"file": ("c.mp4", b"x")})
    assert upload.status_code == 401


async def test_an_unknown_or_revoked_key_is_refused(client: httpx.AsyncClient, runtime: Runtime) -> None:
    unknown = await client.get(f"/api/status/{uuid.uuid4()}", headers=_bearer("ifk_nope_nope"))
    assert unknown.status_code == 401
    assert unknown.json()["error"]["code"] == "E_AUTH_INVALID"

    _tenant_id, secret = await _tenant(runtime)
    assert (await client.get(f"/api/status/{uuid.uuid4()}", headers=_bearer(secret))).status_code == 404
    key_id = secret.split("_")[1]
    async with transaction(runtime.sessions) as session:
        assert await tenants.revoke_key(session, key_id)
    revoked = await client.get(f"/api/status/{uuid.uuid4()}", headers=_bearer(secret))
    assert revoked.status_code == 401


async def test_only_the_hash_of_a_key_is_stored(runtime: Runtime) -> None:
    tenant_id, secret = await _tenant(runtime)
    async with runtime.sessions() as session:
        [row] = (
            (await session.execute(select(ApiKey).where(col(ApiKey.tenant_id) == tenant_id))).scalars().all()
        )
    assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(row.model_dump())


async def test_a_tenant_sees_only_its_own_jobs_and_uploads_under_its_prefix(
    client: httpx.AsyncClient, runtime: Runtime, clip: bytes
) -> None:
    alice, alice_key = await _tenant(runtime)
    _bob, bob_key = await _tenant(runtime)

    response = await client.post(
        "/api/upload", files={"file": ("holiday.mp4", clip)}, headers={"X-API-Key": alice_key}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert response.json()["key"].startswith(f"tenants/{alice}/api/")
    async with runtime.sessions() as session:
        job = await session.get(Job, uuid.UUID(job_id))
    assert job is not None
    assert job.tenant_id == alice

    assert (await client.get(f"/api/status/{job_id}", headers=_bearer(alice_key))).status_code == 200
    for path in (f"/api/status/{job_id}", f"/api/download/{job_id}", f"/api/events/{job_id}"):
        foreign = await client.get(path, headers=_bearer(bob_key))
        assert foreign.status_code == 404, path
        assert foreign.json()["error"]["code"] == "E_JOB_NOT_FOUND"


async def test_a_drop_under_a_tenants_prefix_belongs_to_that_tenant(
    runtime: Runtime, topics: tuple[str, str]
) -> None:
    tenant_id, _ = await _tenant(runtime)
    starter = starter_for(runtime, SETTINGS, *topics)
    record = object_record(
        bucket=SETTINGS.incoming_bucket,
        key=f"tenants/{tenant_id}/drops/movie.mp4",
        etag=uuid.uuid4().hex,
        size=10,
        metadata={},
        version_id=None,
        created_at=datetime.now(UTC),
    )
    job, _ = await starter.create(record, source="bucket")
    assert job.tenant_id == tenant_id
    elsewhere = record.model_copy(update={"key": "drops/movie.mp4", "etag": uuid.uuid4().hex})
    anonymous, _ = await starter.create(elsewhere, source="bucket")
    assert anonymous.tenant_id is None


async def test_a_tenant_over_its_rate_limit_gets_429_with_retry_after(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _limited, limited_key = await _tenant(runtime, rate_limit=3)
    _other, other_key = await _tenant(runtime)
    missing = f"/api/status/{uuid.uuid4()}"

    codes = [(await client.get(missing, headers=_bearer(limited_key))).status_code for _ in range(3)]
    refused = await client.get(missing, headers=_bearer(limited_key))

    if refused.status_code == 404:  # the minute turned over between the requests: count again
        codes = [(await client.get(missing, headers=_bearer(limited_key))).status_code for _ in range(3)]
        refused = await client.get(missing, headers=_bearer(limited_key))
    assert codes == [404, 404, 404]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "E_RATE_LIMITED"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert (await client.get(missing, headers=_bearer(other_key))).status_code == 404, "others unaffected"


@pytest.mark.parametrize(
    ("origin", "allowed"), [("https://app.example", True), ("https://evil.example", False)]
)
async def test_cors_allows_only_the_configured_origins(
    runtime: Runtime, topics: tuple[str, str], origin: str, allowed: bool
) -> None:
    settings = SETTINGS.model_copy(update={"cors_allowed_origins": ("https://app.example",)})
    async with _client(runtime, topics, settings) as client:
        preflight = await client.options(
            "/api/upload",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
    assert (preflight.headers.get("access-control-allow-origin") == origin) is allowed


async def test_an_operator_creates_a_tenant_and_its_key_works(client: httpx.AsyncClient) -> None:
    tenant_id = f"cli-{uuid.uuid4().hex[:8]}"
    invoke = CliRunner().invoke
    result = await asyncio.to_thread(
        invoke, cli, ["admin", "tenant", "create", tenant_id, "--rate-limit", "30"]
    )
    assert result.exit_code == 0, result.output
    secret = result.output.rsplit(": ", 1)[1].strip()
    assert secret.startswith("ifk_")
    again = await asyncio.to_thread(invoke, cli, ["admin", "tenant", "create", tenant_id])
    assert again.exit_code == 2
    assert "exists already" in again.output
    assert (await client.get(f"/api/status/{uuid.uuid4()}", headers=_bearer(secret))).status_code == 404


async def test_a_tenant_prefix_may_not_nest_inside_another(runtime: Runtime) -> None:
    base = f"n-{uuid.uuid4().hex[:8]}"
    async with transaction(runtime.sessions) as session:
        await tenants.create_tenant(session, f"{base}-outer", bucket_prefix=f"{base}/mid/")
        await tenants.create_tenant(
            session, f"{base}-peer", bucket_prefix=f"{base}/mid-2/"
        )  # a sibling is fine
    for name, prefix in [("inner", f"{base}/mid/inner/"), ("around", f"{base}/"), ("same", f"{base}/mid/")]:
        with pytest.raises(tenants.TenantError, match="overlaps"):
            async with transaction(runtime.sessions) as session:
                await tenants.create_tenant(session, f"{base}-{name}", bucket_prefix=prefix)


async def test_an_api_upload_belongs_to_the_caller_whatever_tenant_its_key_falls_under(
    client: httpx.AsyncClient, runtime: Runtime, clip: bytes
) -> None:
    # Two tenants nested before creation refused it: the inner prefix holds the outer one's uploads.
    base = f"legacy-{uuid.uuid4().hex[:8]}"
    async with transaction(runtime.sessions) as session:
        session.add(Tenant(id=f"{base}-outer", name="outer", bucket_prefix=f"{base}/"))
        session.add(Tenant(id=f"{base}-inner", name="inner", bucket_prefix=f"{base}/api/"))
        await session.flush()
        outer = await tenants.issue_key(session, f"{base}-outer")
        inner = await tenants.issue_key(session, f"{base}-inner")

    response = await client.post(
        "/api/upload", files={"file": ("mine.mp4", clip, "video/mp4")}, headers=_bearer(outer.secret)
    )

    assert response.status_code == 202, response.text
    job_id, key = response.json()["job_id"], response.json()["key"]
    assert key.startswith(f"{base}/api/"), "uploads land under the caller's prefix"
    async with runtime.sessions() as session:
        job = await session.get(Job, uuid.UUID(job_id))
    assert job is not None
    assert job.tenant_id == f"{base}-outer"
    assert (await client.get(f"/api/status/{job_id}", headers=_bearer(outer.secret))).status_code == 200
    assert (await client.get(f"/api/status/{job_id}", headers=_bearer(inner.secret))).status_code == 404


async def test_a_tenant_has_weight_1_unless_created_with_another(runtime: Runtime) -> None:
    base = f"w-{uuid.uuid4().hex[:8]}"
    async with transaction(runtime.sessions) as session:
        plain = await tenants.create_tenant(session, f"{base}-plain")
        heavy = await tenants.create_tenant(session, f"{base}-heavy", weight=2.5)
    async with runtime.sessions() as session:
        stored = {t.id: t.weight for t in await tenants.list_tenants(session) if t.id.startswith(base)}
    assert (plain.weight, heavy.weight) == (1.0, 2.5)
    assert stored == {f"{base}-heavy": 2.5, f"{base}-plain": 1.0}


@pytest.mark.parametrize("weight", [0.0, -1.0, float("inf"), float("nan")])
async def test_a_weight_must_be_a_finite_number_above_0(runtime: Runtime, weight: float) -> None:
    tenant_id = f"w-{uuid.uuid4().hex[:8]}"
    with pytest.raises(tenants.TenantError, match=r"weight .* must be a finite number above 0"):
        async with transaction(runtime.sessions) as session:
            await tenants.create_tenant(session, tenant_id, weight=weight)
    async with transaction(runtime.sessions) as session:
        await tenants.create_tenant(session, tenant_id)
    with pytest.raises(tenants.TenantError, match="must be a finite number above 0"):
        async with transaction(runtime.sessions) as session:
            await tenants.set_weight(session, tenant_id, weight)
    async with runtime.sessions() as session:
        tenant = await session.get(Tenant, tenant_id)
    assert tenant is not None
    assert tenant.weight == 1.0


async def test_an_operator_changes_a_tenants_weight_later(runtime: Runtime) -> None:
    tenant_id = f"w-{uuid.uuid4().hex[:8]}"
    async with transaction(runtime.sessions) as session:
        await tenants.create_tenant(session, tenant_id)
    async with transaction(runtime.sessions) as session:
        assert (await tenants.set_weight(session, tenant_id, 0.25)).weight == 0.25
    async with runtime.sessions() as session:
        tenant = await session.get(Tenant, tenant_id)
    assert tenant is not None
    assert tenant.weight == 0.25
    with pytest.raises(tenants.TenantError, match="no tenant"):
        async with transaction(runtime.sessions) as session:
            await tenants.set_weight(session, f"{tenant_id}-nobody", 2.0)


async def test_the_admin_cli_creates_with_a_weight_sets_it_and_lists_it() -> None:
    tenant_id = f"cli-{uuid.uuid4().hex[:8]}"

    def admin(*args: str) -> Any:
        return CliRunner().invoke(cli, ["admin", "tenant", *args])

    created = await asyncio.to_thread(admin, "create", tenant_id, "--weight", "3")
    assert created.exit_code == 0, created.output
    assert "weight 3" in created.output
    changed = await asyncio.to_thread(admin, "set-weight", tenant_id, "0.5")
    assert changed.exit_code == 0, changed.output
    assert changed.output.strip() == f"tenant {tenant_id}: weight 0.5"
    refused = await asyncio.to_thread(admin, "set-weight", tenant_id, "0")
    assert refused.exit_code == 2
    assert "E_TENANT_INVALID" in refused.output
    listed = await asyncio.to_thread(admin, "list")
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[0].split()[:4] == ["id", "weight", "rate/min", "prefix"]
    [row] = [line.split() for line in listed.output.splitlines() if line.startswith(f"{tenant_id} ")]
    assert row == [tenant_id, "0.5", "default", f"tenants/{tenant_id}/", tenant_id]
