"""Operator commands: bootstrap the stack's topics, buckets, notifications and schema."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from infiniteflow_common import migrate, tenants
from infiniteflow_common.db import make_engine, session_factory, transaction
from infiniteflow_common.kafka import ensure_topics
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import ensure_buckets, ensure_expiry, ensure_kafka_notification, make_client
from infiniteflow_common.topics import topic_specs

admin_app = typer.Typer(
    no_args_is_help=True, help="Operate the stack (topics, buckets, migrations, tenants)."
)
tenant_app = typer.Typer(no_args_is_help=True, help="Tenants and their API keys.")
admin_app.add_typer(tenant_app, name="tenant")
T = TypeVar("T")


def _retry(what: str, fn: object, deadline_s: float = 60.0) -> object:
    started = time.monotonic()
    while True:
        try:
            return fn()  # type: ignore[operator]
        except Exception as exc:
            if time.monotonic() - started > deadline_s:
                typer.echo(f"{what} failed: {exc}", err=True)
                raise typer.Exit(1) from exc
            time.sleep(1.0)


@admin_app.command()
def bootstrap() -> None:
    """Create topics (with DLQ twins), buckets, the incoming→Kafka notification, and migrate the database."""
    settings = CommonSettings()
    specs = list(topic_specs().values())
    changed = _retry("topic creation", lambda: ensure_topics(settings.kafka_bootstrap, specs))
    typer.echo(f"topics: {len(specs)} (+{len(specs)} DLQ twins); created or grown: {changed or 'none'}")
    client = make_client(settings)
    buckets = [settings.incoming_bucket, settings.work_bucket, settings.output_bucket, settings.models_bucket]
    created = _retry("bucket creation", lambda: ensure_buckets(client, buckets))
    _retry("bucket notification", lambda: ensure_kafka_notification(client, settings.incoming_bucket))
    # A job deletes its work objects when it ends; this rule removes what a crash left behind.
    expiry = {
        settings.work_bucket: settings.work_retention_days,
        settings.incoming_bucket: settings.incoming_retention_days,
        settings.output_bucket: settings.output_retention_days,
    }
    for bucket, days in expiry.items():
        _retry(
            "lifecycle rules",
            lambda b=bucket, d=days: ensure_expiry(client, b, d, f"infiniteflow-{b}-expiry"),
        )
    typer.echo(
        f"buckets: {', '.join(buckets)}; created: {created or 'none'}; "
        f"{settings.incoming_bucket} → minio.events; expiry (days, 0 = kept): "
        + ", ".join(f"{bucket} {days}" for bucket, days in expiry.items())
    )
    _retry("migrations", lambda: migrate.upgrade(settings.database_url.get_secret_value()))
    typer.echo("database: migrated to head")


@admin_app.command("migrate")
def migrate_command(revision: str = typer.Argument("head"), down: bool = False) -> None:
    """Apply (or with --down, revert to) an Alembic revision."""
    url = CommonSettings().database_url.get_secret_value()
    if down:
        migrate.downgrade(url, revision)
    else:
        migrate.upgrade(url, revision)
    typer.echo(f"database at {revision}")


def _in_transaction(work: Callable[..., Awaitable[T]]) -> T:
    """Run `work(session)` in one transaction against the configured database."""

    async def run() -> T:
        engine = make_engine(CommonSettings().database_url.get_secret_value())
        try:
            async with transaction(session_factory(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except tenants.TenantError as exc:
        typer.echo(f"{exc.code}: {exc.message}", err=True)
        raise typer.Exit(2) from exc


@tenant_app.command("create")
def tenant_create(
    tenant_id: str,
    name: str | None = typer.Option(None, help="display name (default: the id)"),
    rate_limit: int | None = typer.Option(
        None, help="requests per minute (default: API_RATE_LIMIT_PER_MINUTE)"
    ),
    prefix: str | None = typer.Option(None, help="bucket prefix (default: tenants/<id>/)"),
    weight: float = typer.Option(1.0, help="share of the GPU workers against other tenants (> 0)"),
) -> None:
    """Add a tenant and print its first API key (shown once; only its hash is stored)."""

    async def work(session: AsyncSession) -> tenants.IssuedKey:
        tenant = await tenants.create_tenant(
            session,
            tenant_id,
            name=name,
            rate_limit_per_minute=rate_limit,
            bucket_prefix=prefix,
            weight=weight,
        )
        return await tenants.issue_key(session, tenant.id, label="first key")

    issued = _in_transaction(work)
    typer.echo(
        f"tenant {tenant_id} created; drops under {prefix or tenants.default_prefix(tenant_id)}; "
        f"weight {weight:g}"
    )
    typer.echo(f"api key (id {issued.key_id}, shown once): {issued.secret}")


@tenant_app.command("set-weight")
def tenant_set_weight(tenant_id: str, weight: float) -> None:
    """Change a tenant's share of the GPU workers (> 0; 2 runs twice the chunks of 1 when both wait)."""

    async def work(session: AsyncSession) -> float:
        return (await tenants.set_weight(session, tenant_id, weight)).weight

    typer.echo(f"tenant {tenant_id}: weight {_in_transaction(work):g}")


@tenant_app.command("list")
def tenant_list() -> None:
    """Every tenant: id, weight, rate limit, bucket prefix and name."""

    async def work(session: AsyncSession) -> list[tuple[str, str, str, str, str]]:
        return [
            (
                t.id,
                f"{t.weight:g}",
                str(t.rate_limit_per_minute) if t.rate_limit_per_minute is not None else "default",
                t.bucket_prefix,
                t.name,
            )
            for t in await tenants.list_tenants(session)
        ]

    rows = [("id", "weight", "rate/min", "prefix", "name"), *_in_transaction(work)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
        )


@tenant_app.command("issue-key")
def tenant_issue_key(tenant_id: str, label: str | None = typer.Option(None)) -> None:
    """Print a new API key for an existing tenant (shown once)."""
    issued = _in_transaction(lambda session: tenants.issue_key(session, tenant_id, label))
    typer.echo(f"api key (id {issued.key_id}, shown once): {issued.secret}")


@tenant_app.command("revoke-key")
def tenant_revoke_key(key_id: str) -> None:
    """Revoke an API key by its id; requests with it get 401 from then on."""
    if not _in_transaction(lambda session: tenants.revoke_key(session, key_id)):
        typer.echo(f"no live key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"key {key_id} revoked")


@admin_app.command("webhook-enable")
def webhook_enable(url: str) -> None:
    """Send webhooks to an endpoint again after it answered 410 Gone."""
    from services.notifier.store import enable_endpoint

    if not _in_transaction(lambda session: enable_endpoint(session, url)):
        typer.echo("that endpoint is not disabled", err=True)
        raise typer.Exit(1)
    typer.echo("endpoint enabled")
