"""One HTTP attempt as the delivery loop makes it, against httpx's in-memory transport (no servers)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from standardwebhooks import Webhook as Verifier

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.errors import InvalidMessage
from infiniteflow_common.kafka import Delivery
from services.notifier.config import NotifierSettings
from services.notifier.delivery import Deliverer, Response, _redacted
from services.notifier.handlers import JobEventHandler
from services.notifier.store import Webhook
from services.notifier.webhooks import EventType, Signer

SECRET = "whsec_" + base64.b64encode(b"unit-test-webhook-secret").decode()
BODY = '{"type":"job.completed","timestamp":"2026-11-24T00:00:00.000Z","data":{}}'


async def no_dead_letters(origin: Delivery, *, code: str, reason: str, attempts: int, job_id: str) -> None:
    raise AssertionError("a single attempt never dead-letters")


def webhook(url: str) -> Webhook:
    return Webhook(
        webhook_id="msg_unit",
        job_id=uuid.uuid4(),
        event_type="job.completed",
        url=url,
        body=BODY,
        origin_topic="job.completed",
        origin_partition=0,
        origin_offset=0,
        origin_payload=b"",
        attempts=1,
    )


async def attempt(url: str, respond: httpx.MockTransport | None) -> Response:
    async with httpx.AsyncClient(transport=respond) as client:
        deliverer = Deliverer(
            settings=NotifierSettings(webhook_secret=SECRET, webhook_timeout_s=1.0),
            sessions=async_sessionmaker(),
            signer=Signer(SECRET),
            dead_letter=no_dead_letters,
            client=client,
            resolve=lambda host, port: ["93.184.216.34"],  # a public address: DNS stays out of unit tests
        )
        return await deliverer._post(webhook(url), datetime.now(UTC))


async def test_the_request_is_a_signed_json_post_of_the_stored_body() -> None:
    seen: list[httpx.Request] = []

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    response = await attempt("https://hooks.example/in?token=t", httpx.MockTransport(reply))
    assert (response.status_code, response.error, response.kind) == (204, None, "2xx")
    [request] = seen
    assert request.method == "POST"
    assert request.content == BODY.encode()
    assert Verifier(SECRET).verify(request.content, dict(request.headers))["type"] == "job.completed"
    assert request.headers["webhook-id"] == "msg_unit"


@pytest.mark.parametrize(
    ("failure", "kind", "error"),
    [
        (httpx.ConnectError("refused"), "connect", "connection error: ConnectError: refused"),
        (httpx.ReadTimeout("slow"), "timeout", "timeout: no complete response within 1s"),
        (httpx.RemoteProtocolError("bad"), "connect", "connection error: RemoteProtocolError: bad"),
    ],
)
async def test_no_response_is_a_retryable_failure_with_a_readable_error(
    failure: Exception, kind: str, error: str
) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        raise failure

    response = await attempt("http://127.0.0.1:9/hook", httpx.MockTransport(reply))
    assert (response.status_code, response.kind, response.error) == (None, kind, error)
    assert not response.permanent


@pytest.mark.parametrize("url", ["ftp://example/hook", "example.com/hook", "http://"])
async def test_an_unusable_url_is_a_permanent_failure(url: str) -> None:
    response = await attempt(url, None)  # httpx's real transport refuses these before connecting
    assert response.kind == "invalid_url"
    assert response.permanent
    assert response.error is not None
    assert "webhook URL" in response.error


async def test_an_error_response_keeps_its_status_retry_after_and_the_start_of_its_body() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"retry-after": "7"}, content=b"maintenance " * 100)

    response = await attempt("http://example/hook", httpx.MockTransport(reply))
    assert (response.status_code, response.kind, response.retry_after) == (503, "5xx", "7")
    assert response.error is not None
    assert response.error.startswith("HTTP 503: maintenance maintenance")
    assert len(response.error) < 320


async def test_a_payload_that_is_not_a_job_event_goes_to_the_dlq_before_touching_the_database() -> None:
    handle = JobEventHandler(
        event_type=EventType.JOB_COMPLETED,
        catalog=SchemaCatalog.load(),
        sessions=async_sessionmaker(),
        presign=lambda bucket, key, ttl: "unused",
        output_url_ttl=timedelta(days=7),
    )
    with pytest.raises(InvalidMessage):
        await handle(Delivery("job.completed", 0, 0, None, b"not avro", {}))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@hooks.example:8443/in/x?token=secret", "https://hooks.example:8443/in/x"),
        ("http://hooks.example/in#frag", "http://hooks.example/in"),
        ("http://hooks.example:bad/in", "http://hooks.example/in"),
    ],
)
def test_urls_in_dead_letters_lose_their_credentials(url: str, shown: str) -> None:
    assert _redacted(url) == shown
