"""Who is calling the API, and whether they may call it now.

Keys arrive as `Authorization: Bearer ifk_…` or `X-API-Key: ifk_…`. Every ingest replica shares one
rate limit per tenant: requests are counted in fixed one-minute windows in PostgreSQL (one upsert per
request), and a request over the limit gets 429 with `Retry-After` (seconds to the next window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from infiniteflow_common.db import Tenant
from infiniteflow_common.tenants import count_in_window, prune_windows

ANONYMOUS = "_anonymous"
"""The rate-limit bucket of callers without a key (only where keys are not required)."""
WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class Caller:
    """The tenant behind a request; None for an anonymous caller (allowed only in local mode)."""

    tenant: Tenant | None

    @property
    def tenant_id(self) -> str | None:
        """The tenant's id, None when anonymous."""
        return self.tenant.id if self.tenant is not None else None

    def may_see(self, job_tenant_id: str | None) -> bool:
        """A tenant sees only its own jobs; an anonymous caller only jobs that have no tenant."""
        return job_tenant_id == self.tenant_id


@dataclass(frozen=True)
class RateDecision:
    """The outcome of counting one request."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key a request carries, if any (bearer token first)."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return x_api_key.strip() if x_api_key and x_api_key.strip() else None


def window_start(now: datetime) -> datetime:
    """The start of the one-minute window `now` falls in."""
    return now.replace(second=0, microsecond=0)


def decide(count: int, limit: int, now: datetime) -> RateDecision:
    """Whether the `count`-th request of the current window is within `limit` (pure)."""
    retry_after = math.ceil((window_start(now) + WINDOW - now).total_seconds())
    return RateDecision(
        allowed=count <= limit,
        limit=limit,
        remaining=max(0, limit - count),
        retry_after_s=max(1, retry_after),
    )


async def count_request(session: AsyncSession, bucket: str, limit: int, now: datetime) -> RateDecision:
    """Count one request of `bucket` (a tenant id) in the current window; old windows are pruned."""
    start = window_start(now)
    count = await count_in_window(session, bucket, start)
    if count == 1:  # the window's first request tidies the tenant's old windows
        await prune_windows(session, bucket, start - WINDOW)
    return decide(count, limit, now)
