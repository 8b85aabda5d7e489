"""What the routers are given: the API's dependencies (`ApiDeps`) and the calling tenant (`Caller`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from minio import Minio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.db import transaction, utcnow
from infiniteflow_common.tenants import authenticate
from infiniteflow_common.topics import Topic
from services.ingest import metrics
from services.ingest.api.errors import ApiError
from services.ingest.auth import Caller, count_request, presented_key
from services.ingest.config import IngestSettings
from services.ingest.job_events import JobEventHub
from services.ingest.start import JobStarter

HealthCheck = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ApiDeps:
    """What the API needs; the Runtime's lazy resources fit (nothing here connects on creation)."""

    settings: IngestSettings
    sessions: async_sessionmaker[AsyncSession]
    storage: Minio
    starter: JobStarter
    kafka_check: HealthCheck
    # Pushes job changes to /api/events streams; without it a stream re-reads its job every few seconds.
    job_events: JobEventHub | None = None
    # Where a cancel is announced (the notifier's job.cancelled webhook); tests use a private topic.
    cancelled_topic: str = Topic.JOB_CANCELLED.value


def api_deps(request: Request) -> ApiDeps:
    """The `ApiDeps` that `create_api` was given."""
    deps: ApiDeps = request.app.state.deps
    return deps


async def current_caller(request: Request) -> Caller:
    """Authenticate the request's key (if any) and count it against its tenant's rate limit."""
    deps = api_deps(request)
    settings = deps.settings
    secret = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    challenge = {"WWW-Authenticate": 'Bearer realm="infiniteflow"'}
    async with transaction(deps.sessions) as session:
        if secret is None:
            if settings.api_auth_required:
                raise ApiError(
                    401,
                    "E_AUTH_REQUIRED",
                    "send your API key as 'Authorization: Bearer <key>' (or the X-API-Key header)",
                    headers=challenge,
                )
            # local mode: anonymous callers share the jobs that have no tenant, unmetered
            return Caller(tenant=None)
        tenant = await authenticate(session, secret)
        if tenant is None:
            raise ApiError(401, "E_AUTH_INVALID", "the API key is unknown or revoked", headers=challenge)
        limit = tenant.rate_limit_per_minute or settings.api_rate_limit_per_minute
        decision = await count_request(session, tenant.id, limit, utcnow())
    if not decision.allowed:
        metrics.RATE_LIMITED.inc()
        raise ApiError(
            429,
            "E_RATE_LIMITED",
            f"over the limit of {limit} requests per minute; retry in {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
            retry_after_s=decision.retry_after_s,
        )
    return Caller(tenant=tenant)


Deps = Annotated[ApiDeps, Depends(api_deps)]
CurrentCaller = Annotated[Caller, Depends(current_caller)]
