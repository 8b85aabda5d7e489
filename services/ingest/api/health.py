"""`GET /health`: whether Kafka, MinIO and PostgreSQL answer, each within a few seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from infiniteflow_common.db import ping
from infiniteflow_common.observability import get_logger
from services.ingest.api.deps import Deps, HealthCheck

log = get_logger()
HEALTH_TIMEOUT_S = 3.0

router = APIRouter()


def kafka_admin_check(bootstrap: str) -> HealthCheck:
    """A health check that lists the cluster's topics through a (reused) admin client."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000})

    async def check() -> None:
        await asyncio.to_thread(admin.list_topics, timeout=HEALTH_TIMEOUT_S)

    return check


@router.get("/health", summary="Kafka, MinIO and PostgreSQL reachability")
async def health(deps: Deps) -> JSONResponse:
    """200 when every component answers, else 503; each component's status either way."""
    checks: dict[str, Callable[[], Awaitable[Any]]] = {
        "kafka": deps.kafka_check,
        "minio": lambda: asyncio.to_thread(deps.storage.bucket_exists, deps.settings.incoming_bucket),
        "postgres": lambda: ping(deps.sessions),
    }
    results = await asyncio.gather(*(_check(name, fn) for name, fn in checks.items()))
    components = dict(zip(checks, results, strict=True))
    healthy = all(c["status"] == "ok" for c in components.values())
    return JSONResponse(
        {"status": "ok" if healthy else "degraded", "components": components},
        status_code=200 if healthy else 503,
    )


async def _check(name: str, fn: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        result = await asyncio.wait_for(fn(), timeout=HEALTH_TIMEOUT_S)
    except TimeoutError:
        return {"status": "down", "error": f"no answer within {HEALTH_TIMEOUT_S:g} s"}
    except Exception as exc:
        # Anyone may call /health: the exception's text (addresses, user names, paths) goes to the log.
        log.warning("health check failed", component=name, error=repr(exc))
        return {"status": "down", "error": "unreachable (see the ingest log)"}
    if result is False:  # bucket_exists: reachable, but the bucket is missing
        return {"status": "down", "error": "the incoming bucket does not exist"}
    return {"status": "ok", "latency_ms": round((loop.time() - started) * 1000, 1)}
