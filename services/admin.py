"""Operator commands: bootstrap the stack's topics, buckets, notifications and schema."""

from __future__ import annotations

import time

import typer

from infiniteflow_common import migrate
from infiniteflow_common.kafka import ensure_topics
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import ensure_buckets, ensure_kafka_notification, make_client
from infiniteflow_common.topics import topic_specs

admin_app = typer.Typer(no_args_is_help=True, help="Operate the stack (topics, buckets, migrations).")


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
    typer.echo(
        f"buckets: {', '.join(buckets)}; created: {created or 'none'}; "
        f"{settings.incoming_bucket} → minio.events"
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
