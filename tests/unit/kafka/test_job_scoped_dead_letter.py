"""A worker's unclassified error fails the job it was working for, which need not be the record's.

Under fair dispatch a `chunk.ready` record is a doorbell: the worker may claim another job's chunk.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from infiniteflow_common import runtime as runtime_module
from infiniteflow_common import storage
from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.classify import UnexpectedFailure
from infiniteflow_common.errors import HandedBack, InvalidMessage, JobScopedError
from infiniteflow_common.kafka import Delivery, ReliableConsumer
from infiniteflow_common.runtime import Runtime
from infiniteflow_common.settings import CommonSettings
from services.gpu_interp.handlers import ChunkHandler
from tests.unit.kafka.fakes import Broker, Member, Reported, message, reliable_consumer

TOPIC = "test.doorbell"
RECORD_JOB = str(uuid.uuid4())
CLAIMED_JOB = str(uuid.uuid4())


def consumer(handler: Any, broker: Broker, reported: Reported) -> ReliableConsumer:
    """A gpu_interp consumer retrying twice; nothing is permanent."""
    return reliable_consumer(
        handler,
        broker,
        reported,
        topic=TOPIC,
        permanent_failure=lambda exc: None,
        retry_max_attempts=2,
        service="gpu_interp",
    )


async def test_an_error_outlasting_its_retries_fails_the_job_it_names_not_the_records() -> None:
    async def handle(delivery: Delivery) -> None:
        raise JobScopedError(CLAIMED_JOB, RuntimeError("CUDA error: an illegal memory access"))

    broker, member, reported = Broker(), Member(), Reported()
    reader = consumer(handle, broker, reported)
    record = message(TOPIC, 3, b"doorbell", member, key=RECORD_JOB.encode())
    for _ in range(2):
        await reader(record)

    [(_delivery, verdict)] = reported
    assert isinstance(verdict, UnexpectedFailure)
    assert verdict.job_id == CLAIMED_JOB
    assert "RuntimeError: CUDA error" in verdict.detail, "judged and described by the error it wraps"
    [(_topic, value, _headers)] = broker.published
    _schema, envelope = SchemaCatalog.load().decode(value, "DeadLetter")
    assert str(envelope["job_id"]) == CLAIMED_JOB
    assert envelope["key"] == RECORD_JOB.encode(), "the record itself is what is dead-lettered"
    assert member.consumer.committed == [4]


async def test_a_wrapped_transient_error_is_retried_as_the_error_itself_would_be() -> None:
    async def handle(delivery: Delivery) -> None:
        raise JobScopedError(CLAIMED_JOB, ConnectionResetError("database connection reset"))

    broker, member, reported = Broker(), Member(), Reported()
    reader = consumer(handle, broker, reported)
    record = message(TOPIC, 3, b"doorbell", member, key=RECORD_JOB.encode())
    for _ in range(2):
        await reader(record)

    assert reported == []
    assert broker.published == []
    assert reader.fatal is not None, "a transient failure's budget ran out: stop without committing"
    assert member.consumer.committed == []


async def test_the_runtime_fails_the_job_the_dead_letter_names(
    settings: CommonSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed: list[uuid.UUID] = []

    async def report_failure(*_args: Any, job_id: uuid.UUID, **_kwargs: Any) -> None:
        failed.append(job_id)

    monkeypatch.setattr(runtime_module, "report_failure", report_failure)
    monkeypatch.setattr(storage, "delete_prefix", lambda *_args: None)
    runtime = Runtime(settings, "gpu_interp")
    delivery = Delivery(TOPIC, 0, 3, RECORD_JOB.encode(), b"doorbell", {})
    scoped = UnexpectedFailure(RuntimeError("boom"), attempts=2)
    scoped.job_id = CLAIMED_JOB
    await runtime._fail_job_of(delivery, scoped)
    await runtime._fail_job_of(delivery, InvalidMessage("bad record"))
    assert failed == [uuid.UUID(CLAIMED_JOB), uuid.UUID(RECORD_JOB)]


def claimed(record_job: str, chunk_job: str, error: BaseException) -> tuple[Any, Any, Any]:
    """A stand-in handler whose claimed chunk (of `chunk_job`) fails with `error`."""

    async def run(chunk: Any, held: Any) -> None:
        raise error

    record = SimpleNamespace(job_id=uuid.UUID(record_job))
    held = SimpleNamespace(chunk=SimpleNamespace(job_id=uuid.UUID(chunk_job)))
    return SimpleNamespace(_run=run), record, held


async def test_the_worker_names_the_claimed_chunks_job_when_it_is_another_jobs() -> None:
    error = ValueError("codec library failed")
    handler, record, held = claimed(RECORD_JOB, CLAIMED_JOB, error)
    with pytest.raises(JobScopedError) as raised:
        await ChunkHandler._run_claimed(handler, record, held)
    assert (raised.value.job_id, raised.value.error) == (CLAIMED_JOB, error)


@pytest.mark.parametrize(
    ("chunk_job", "error"),
    [
        (RECORD_JOB, ValueError("the record's own chunk")),
        (CLAIMED_JOB, HandedBack("stopping")),
        (CLAIMED_JOB, InvalidMessage("outdated plan")),
    ],
)
async def test_the_worker_leaves_its_own_jobs_errors_and_typed_decisions_as_they_are(
    chunk_job: str, error: Exception
) -> None:
    handler, record, held = claimed(RECORD_JOB, chunk_job, error)
    with pytest.raises(type(error)) as raised:
        await ChunkHandler._run_claimed(handler, record, held)
    assert raised.value is error
