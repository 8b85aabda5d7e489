"""Tenants: who owns a job, their API keys (only hashes kept) and the bucket prefix they live under.

A tenant's uploads, bucket drops and outputs all sit under its `bucket_prefix` (`tenants/<id>/` by
default), so a bucket policy or an operator can keep customers apart; a drop under that prefix belongs
to the tenant exactly as an upload with its key does. Its `weight` is its share of the GPU workers
against other tenants with work waiting (`dispatch`): a tenant of weight 2 may run twice the chunks of
one of weight 1 before the workers prefer the other.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from infiniteflow_common.db import ApiKey, Tenant, utcnow
from infiniteflow_common.errors import InfiniteFlowError

KEY_PREFIX = "ifk_"
_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_BUCKET_PREFIX = re.compile(r"^[a-z0-9][a-z0-9/_-]*/$")


class TenantError(InfiniteFlowError):
    """A tenant or key request an operator must correct (bad id, unknown tenant, duplicate)."""

    code = "E_TENANT_INVALID"


@dataclass(frozen=True)
class IssuedKey:
    """A freshly issued key: `secret` is shown once and never stored."""

    key_id: str
    tenant_id: str
    secret: str


def hash_key(secret: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_weight(weight: float) -> float:
    """A tenant's weight must be a finite number above 0 (`tenants.weight`'s check, and no infinity)."""
    if not math.isfinite(weight) or weight <= 0:
        raise TenantError(f"weight {weight!r} must be a finite number above 0 (1 is an equal share)")
    return float(weight)


def default_prefix(tenant_id: str) -> str:
    """Where a tenant's objects go unless the operator chose otherwise."""
    return f"tenants/{tenant_id}/"


async def create_tenant(
    session: AsyncSession,
    tenant_id: str,
    *,
    name: str | None = None,
    rate_limit_per_minute: int | None = None,
    bucket_prefix: str | None = None,
    weight: float = 1.0,
) -> Tenant:
    """Add a tenant; refuses a malformed id or prefix, a weight not above 0, and an id that exists."""
    if not _TENANT_ID.match(tenant_id):
        raise TenantError(f"tenant id {tenant_id!r} must be 1–63 of a-z, 0-9 and '-', starting alphanumeric")
    prefix = bucket_prefix or default_prefix(tenant_id)
    if not _BUCKET_PREFIX.match(prefix) or ".." in prefix or "//" in prefix:
        raise TenantError(f"bucket prefix {prefix!r} must be lowercase path segments ending in '/'")
    if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
        raise TenantError("the rate limit must be at least 1 request per minute")
    weight = check_weight(weight)
    if await session.get(Tenant, tenant_id) is not None:
        raise TenantError(f"tenant {tenant_id!r} exists already")
    # One object key, one owner: a prefix inside another tenant's (or around it) would make a drop or
    # an upload of one tenant another's job.
    nested = (
        (
            await session.execute(
                select(Tenant)
                .where(
                    or_(
                        func.starts_with(prefix, col(Tenant.bucket_prefix)),
                        func.starts_with(col(Tenant.bucket_prefix), prefix),
                    )
                )
                .limit(1)
            )
        )
        .scalars()
        .first()
    )
    if nested is not None:
        raise TenantError(
            f"bucket prefix {prefix!r} overlaps tenant {nested.id!r}'s {nested.bucket_prefix!r}; a "
            "tenant's prefix may not lie inside another's (nor contain one)"
        )
    tenant = Tenant(
        id=tenant_id,
        name=name or tenant_id,
        bucket_prefix=prefix,
        rate_limit_per_minute=rate_limit_per_minute,
        weight=weight,
    )
    session.add(tenant)
    await session.flush()
    return tenant


async def set_weight(session: AsyncSession, tenant_id: str, weight: float) -> Tenant:
    """Change a tenant's share of the workers; the next chunk claim uses it (running chunks finish)."""
    weight = check_weight(weight)
    tenant = await session.get(Tenant, tenant_id, with_for_update=True)
    if tenant is None:
        raise TenantError(f"no tenant {tenant_id!r}")
    tenant.weight = weight
    await session.flush()
    return tenant


async def list_tenants(session: AsyncSession) -> list[Tenant]:
    """Every tenant, by id."""
    return list((await session.execute(select(Tenant).order_by(col(Tenant.id)))).scalars().all())


async def issue_key(session: AsyncSession, tenant_id: str, label: str | None = None) -> IssuedKey:
    """A new API key for the tenant; only its hash is stored."""
    if await session.get(Tenant, tenant_id) is None:
        raise TenantError(f"no tenant {tenant_id!r}")
    key_id = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(id=key_id, tenant_id=tenant_id, key_hash=hash_key(secret), label=label))
    await session.flush()
    return IssuedKey(key_id=key_id, tenant_id=tenant_id, secret=secret)


async def revoke_key(session: AsyncSession, key_id: str) -> bool:
    """Revoke a key by id; False when there is no such live key."""
    result = await session.execute(
        update(ApiKey)
        .where(col(ApiKey.id) == key_id, col(ApiKey.revoked_at).is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def authenticate(session: AsyncSession, secret: str, now: datetime | None = None) -> Tenant | None:
    """The tenant owning a live key, or None (unknown, malformed or revoked keys look the same)."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        return None
    row = (
        await session.execute(
            select(ApiKey, Tenant)
            .join(Tenant, col(Tenant.id) == col(ApiKey.tenant_id))
            .where(col(ApiKey.key_hash) == hash_key(secret), col(ApiKey.revoked_at).is_(None))
        )
    ).first()
    if row is None:
        return None
    key, tenant = row
    key.last_used_at = now or utcnow()
    return tenant


async def tenant_of_key(session: AsyncSession, object_key: str) -> Tenant | None:
    """The tenant whose bucket prefix holds `object_key` (the longest prefix wins), else None."""
    statement = (
        select(Tenant)
        .where(func.starts_with(object_key, col(Tenant.bucket_prefix)))
        .order_by(func.length(col(Tenant.bucket_prefix)).desc())
        .limit(1)
    )
    return (await session.execute(statement)).scalars().first()


async def tenant_prefix(session: AsyncSession, tenant_id: str | None) -> str:
    """The bucket prefix of a job's tenant ('' for anonymous jobs)."""
    if tenant_id is None:
        return ""
    tenant = await session.get(Tenant, tenant_id)
    return tenant.bucket_prefix if tenant is not None else ""


async def count_in_window(session: AsyncSession, tenant_id: str, window_start: datetime) -> int:
    """Count one request of `tenant_id` in the rate window starting at `window_start` (one upsert,
    shared by every ingest replica); the window's count including this request."""
    count = (
        await session.execute(
            text(
                "insert into rate_windows (tenant_id, window_start, requests) values (:t, :w, 1) "
                "on conflict (tenant_id, window_start) "
                "do update set requests = rate_windows.requests + 1 returning requests"
            ),
            {"t": tenant_id, "w": window_start},
        )
    ).scalar_one()
    return int(count)


async def prune_windows(session: AsyncSession, tenant_id: str, before: datetime) -> None:
    """Drop the tenant's rate windows that started before `before`."""
    await session.execute(
        text("delete from rate_windows where tenant_id = :t and window_start < :w"),
        {"t": tenant_id, "w": before},
    )
