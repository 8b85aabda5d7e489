"""The delivery loop: claims due webhooks, POSTs them signed, records every attempt, dead-letters the rest.

Any number of notifier instances may run it: rows are claimed with `FOR UPDATE SKIP LOCKED` and a lease
(`store.claim_due`), and the HTTP attempt happens outside any transaction. A webhook that ends
`exhausted` (schedule used up, or a 4xx the receiver will not change its mind about) is published to
its origin topic's DLQ by an outbox step, so a Kafka outage delays the dead letter but never loses it.
A failing database or broker makes an iteration fail; the loop backs off and, after the shared retry
budget, raises so the process stops and its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Collection
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.chaos import crash_point
from infiniteflow_common.db import transaction, utcnow
from infiniteflow_common.kafka import Delivery, backoff_delay
from infiniteflow_common.observability import get_logger
from infiniteflow_common.topics import dlq_of
from services.notifier import metrics
from services.notifier.config import NotifierSettings
from services.notifier.egress import (
    DestinationRefused,
    ResolutionFailed,
    Resolver,
    check_destination,
    system_resolver,
)
from services.notifier.schedule import RetryPolicy, parse_retry_after
from services.notifier.store import (
    AttemptRecord,
    Webhook,
    claim_dead_letters,
    claim_due,
    count_pending,
    disable_endpoint,
    endpoint_disabled_at,
    mark_dead_lettered,
    record_attempt,
)
from services.notifier.webhooks import (
    E_WEBHOOK_ENDPOINT_DISABLED,
    E_WEBHOOK_EXHAUSTED,
    E_WEBHOOK_GONE,
    Decision,
    Outcome,
    Signer,
    decide,
)

log = get_logger()

# Bytes of a failed response's body kept in the attempt's error, enough for a receiver's message.
ERROR_SNIPPET_BYTES = 300


class DeadLetterPublisher(Protocol):
    """Publishes the dead letter of an origin record (see `infiniteflow_common.kafka.publish_dead_letter`)."""

    async def __call__(
        self, origin: Delivery, *, code: str, reason: str, attempts: int, job_id: str
    ) -> None: ...


@dataclass(frozen=True)
class Response:
    """What an attempt got back, reduced to what the policy and the records need."""

    status_code: int | None
    error: str | None
    kind: str
    """Bounded class for metrics: 2xx, 3xx, 4xx, 429, 5xx, timeout, connect, dns, invalid_url, error."""
    retry_after: str | None = None
    code: str | None = None
    """The dead-letter code of a permanent failure decided before any request (a refused destination)."""

    @property
    def permanent(self) -> bool:
        """A failure no retry can fix that `decide` cannot see from a status code."""
        return self.kind in ("invalid_url", "disabled")


def _status_kind(status: int) -> str:
    return "429" if status == 429 else f"{status // 100}xx"


def _redacted(url: str) -> str:
    # Webhook URLs often carry tokens (query, user:password@); logs and dead letters keep the rest.
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


class Deliverer:
    """Sends due webhooks until cancelled; `wake()` makes it look for work at once."""

    def __init__(
        self,
        *,
        settings: NotifierSettings,
        sessions: async_sessionmaker[AsyncSession],
        signer: Signer,
        dead_letter: DeadLetterPublisher,
        client: httpx.AsyncClient | None = None,
        only_jobs: Collection[uuid.UUID] | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        resolve: Resolver = system_resolver,
    ) -> None:
        self.settings = settings
        self.resolve = resolve
        self.sessions = sessions
        self.signer = signer
        self.dead_letter = dead_letter
        self.client = client
        self.only_jobs = only_jobs
        self.clock = clock
        self.rng = rng or random.Random()
        self.policy = RetryPolicy(
            schedule=settings.webhook_retry_schedule_s,
            jitter_ratio=settings.webhook_jitter_ratio,
            retry_after_max_s=settings.webhook_retry_after_max_s,
        )
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Ask the loop to look for due webhooks now (a new one was just stored)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until cancelled; raises after `retry_max_attempts` consecutive failed iterations."""
        async with AsyncExitStack() as stack:
            if self.client is None:
                # Redirects are not followed: the signed body must not travel to another host.
                self.client = await stack.enter_async_context(
                    httpx.AsyncClient(follow_redirects=False, timeout=self.settings.webhook_timeout_s)
                )
            failures = 0
            while True:
                try:
                    busy = await self.run_once()
                    failures = 0
                except Exception as exc:
                    failures += 1
                    if failures >= self.settings.retry_max_attempts:
                        log.error("delivery loop giving up", failures=failures, error=repr(exc))
                        raise
                    delay = backoff_delay(
                        failures, self.settings.retry_base_delay_s, self.settings.retry_max_delay_s, self.rng
                    )
                    log.warning("delivery loop iteration failed", error=repr(exc), retry_in_s=round(delay, 3))
                    await asyncio.sleep(delay)
                    continue
                if not busy:
                    await self._idle()

    async def run_once(self) -> bool:
        """One iteration: attempt a batch of due webhooks, then publish pending dead letters.

        Returns True when a full batch was claimed (more may be due, so the loop goes on at once).
        """
        now = self.clock()
        async with transaction(self.sessions) as session:
            batch = await claim_due(
                session,
                now=now,
                limit=self.settings.webhook_batch_size,
                lease_s=self.settings.claim_lease_s,
                only_jobs=self.only_jobs,
            )
        # Every attempt finishes and records what it can before a failure (the database) is raised.
        results = await asyncio.gather(*(self._attempt(webhook) for webhook in batch), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await self.publish_dead_letters()
        return len(batch) >= self.settings.webhook_batch_size

    async def publish_dead_letters(self) -> int:
        """Publish the dead letter of every exhausted webhook that has none yet; returns how many."""
        published = 0
        async with transaction(self.sessions) as session:
            for webhook in await claim_dead_letters(session, limit=100, only_jobs=self.only_jobs):
                code = webhook.error_code or E_WEBHOOK_EXHAUSTED
                reason = (
                    f"webhook {webhook.webhook_id} ({webhook.event_type}) to "
                    f"{_redacted(webhook.url or '')} gave up after {webhook.attempts} attempt(s); "
                    f"last: {webhook.last_error or 'no error recorded'}"
                )
                await self.dead_letter(
                    webhook.origin(),
                    code=code,
                    reason=reason,
                    attempts=webhook.attempts,
                    job_id=str(webhook.job_id),
                )
                await mark_dead_lettered(session, webhook.webhook_id, now=self.clock())
                metrics.WEBHOOKS_DEAD_LETTERED.labels(code).inc()
                log.warning(
                    "webhook dead-lettered",
                    job_id=str(webhook.job_id),
                    webhook_id=webhook.webhook_id,
                    code=code,
                    dlq=dlq_of(webhook.origin_topic),
                )
                published += 1
        return published

    async def refresh_pending_gauge(self) -> None:
        """Set the pending-webhooks gauge from the table (shared by every instance)."""
        async with transaction(self.sessions) as session:
            metrics.WEBHOOKS_PENDING.set(await count_pending(session))

    async def _idle(self) -> None:
        await self.refresh_pending_gauge()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=self.settings.webhook_poll_interval_s)
        self._wakeup.clear()

    async def _attempt(self, webhook: Webhook) -> None:
        bound = log.bind(job_id=str(webhook.job_id), webhook_id=webhook.webhook_id, attempt=webhook.attempts)
        attempted_at = self.clock()
        started = time.perf_counter()
        async with transaction(self.sessions) as session:
            disabled = await endpoint_disabled_at(session, webhook.url or "")
        if disabled is not None:
            message = f"not sent: the endpoint answered 410 Gone at {disabled.isoformat()} and is disabled"
            response = Response(None, message, "disabled")
        else:
            response = await self._post(webhook, attempted_at)
        if response.status_code is not None and 200 <= response.status_code < 300:
            crash_point(self.settings, "notifier.after_delivery")
        latency_s = time.perf_counter() - started
        decision = (
            Decision(
                Outcome.REJECTED,
                code=E_WEBHOOK_ENDPOINT_DISABLED if response.kind == "disabled" else response.code,
            )
            if response.permanent
            else decide(
                response.status_code,
                webhook.attempts,
                self.policy,
                retry_after_s=parse_retry_after(response.retry_after, attempted_at),
                rng=self.rng,
            )
        )
        record = AttemptRecord(
            status_code=response.status_code,
            error=response.error,
            latency_ms=round(latency_s * 1000, 3),
            attempted_at=attempted_at,
        )
        async with transaction(self.sessions) as session:
            current = await record_attempt(session, webhook, record, decision, now=self.clock())
            if decision.code == E_WEBHOOK_GONE and webhook.url:
                await disable_endpoint(session, webhook.url, job_id=webhook.job_id, now=self.clock())
                bound.warning("webhook endpoint answered 410 Gone; disabled", url=_redacted(webhook.url))
        metrics.WEBHOOK_ATTEMPTS.labels(webhook.event_type, decision.outcome.value, response.kind).inc()
        metrics.WEBHOOK_ATTEMPT_SECONDS.labels(decision.outcome.value).observe(latency_s)
        fields = {
            "outcome": decision.outcome.value,
            "status_code": response.status_code,
            "latency_ms": record.latency_ms,
            "error": response.error,
            "retry_in_s": None if decision.retry_in_s is None else round(decision.retry_in_s, 3),
        }
        if not current:
            bound.warning("webhook attempt outlived its claim; a newer claim owns the row", **fields)
        elif decision.outcome is Outcome.DELIVERED:
            bound.info("webhook delivered", **fields)
        else:
            bound.warning("webhook attempt failed", **fields)

    async def _post(self, webhook: Webhook, at: datetime) -> Response:
        assert self.client is not None, "run() opens the client; tests pass one"
        headers = self.signer.headers(webhook.webhook_id, webhook.body, at)
        timeout_s = self.settings.webhook_timeout_s
        try:
            target = await asyncio.to_thread(
                check_destination, webhook.url or "", self.settings.webhook_allowed_destinations, self.resolve
            )
        except ResolutionFailed as exc:
            return Response(None, exc.message, "dns")
        except DestinationRefused as exc:
            return Response(None, exc.message, "invalid_url", code=exc.code)
        sni = {"sni_hostname": target.host.rsplit(":", 1)[0]} if target.url.startswith("https:") else {}
        try:
            async with (
                asyncio.timeout(timeout_s),
                self.client.stream(
                    "POST",
                    target.url,  # the address that was checked, so DNS cannot change it after the check
                    content=webhook.body.encode(),
                    headers={**headers, "host": target.host},
                    timeout=timeout_s,
                    extensions=sni,
                ) as reply,
            ):
                snippet = await _read_prefix(reply, ERROR_SNIPPET_BYTES)
        except (TimeoutError, httpx.TimeoutException):
            return Response(None, f"timeout: no complete response within {timeout_s:g}s", "timeout")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return Response(None, f"invalid webhook URL: {exc}", "invalid_url")
        except httpx.TransportError as exc:
            return Response(None, f"connection error: {type(exc).__name__}: {exc}", "connect")
        except httpx.HTTPError as exc:
            return Response(None, f"HTTP error: {type(exc).__name__}: {exc}", "error")
        status = reply.status_code
        error = None if 200 <= status < 300 else f"HTTP {status}" + (f": {snippet}" if snippet else "")
        return Response(status, error, _status_kind(status), reply.headers.get("retry-after"))


async def _read_prefix(reply: httpx.Response, limit: int) -> str:
    # Read at most `limit` bytes: a receiver's error page is evidence, its size is not our problem.
    buffer = b""
    async for chunk in reply.aiter_bytes():
        buffer += chunk
        if len(buffer) >= limit:
            break
    return buffer[:limit].decode("utf-8", "replace").strip()
