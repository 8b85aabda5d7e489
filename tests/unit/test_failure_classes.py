"""Which failures a consumer waits out (transient) and which ones fail a job after bounded retries."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy.exc
import urllib3.exceptions
from confluent_kafka import KafkaError, KafkaException

from infiniteflow_common.classify import INTERNAL_MESSAGE, UnexpectedFailure, describe, is_transient
from infiniteflow_common.errors import HandedBack, InfiniteFlowError, InvalidMessage, TransientError


def _connection_lost() -> sqlalchemy.exc.DBAPIError:
    """What SQLAlchemy raises when PostgreSQL closes the connection mid-query (a restart, an admin)."""
    driver = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    try:
        try:
            raise driver
        except asyncpg.ConnectionDoesNotExistError as exc:
            raise sqlalchemy.exc.DBAPIError("select 1", None, exc) from exc
    except sqlalchemy.exc.DBAPIError as wrapped:
        return wrapped


def _unknown_codec() -> Exception:
    from av.codec.codec import UnknownCodecError

    return UnknownCodecError("h266")


@pytest.mark.parametrize(
    "error",
    [
        TransientError("object store unavailable"),
        HandedBack("stopping"),
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5433)"),
        TimeoutError(),
        urllib3.exceptions.MaxRetryError(None, "/work/x", "connection refused"),  # type: ignore[arg-type]
        KafkaException(KafkaError(KafkaError._TRANSPORT)),
        _connection_lost(),
        sqlalchemy.exc.OperationalError("select 1", None, Exception("server closed the connection")),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.InterfaceError("connection is closed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_failures_of_the_outside_world_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("invalid literal"),
        KeyError("stream"),
        RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"),
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        _unknown_codec(),
        TypeError("unsupported operand"),
        AssertionError(),
        asyncpg.UndefinedColumnError("column jobs.nope does not exist"),  # a bug, not an outage
        sqlalchemy.exc.ProgrammingError("select nope", None, Exception("syntax error")),
        InfiniteFlowError("a stage failed in a way nobody classified"),
        InvalidMessage("bad record"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_nobody_classified_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def _bug_while_handling_an_outage() -> ValueError:
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError:
            raise ValueError("a bug in the error handling")  # noqa: B904 - the point of the test
    except ValueError as error:
        return error


def test_a_value_error_raised_while_handling_an_outage_is_not_mistaken_for_the_outage() -> None:
    error = _bug_while_handling_an_outage()
    assert isinstance(error.__context__, ConnectionResetError)
    assert not is_transient(error)


def test_an_unexpected_failure_tells_the_user_nothing_of_the_error_and_operators_everything() -> None:
    failure = UnexpectedFailure(ValueError("unknown codec at /srv/secret/path"), attempts=3)
    assert failure.code == "E_INTERNAL"
    assert failure.message == INTERNAL_MESSAGE
    assert "secret" not in failure.message
    assert "ValueError" not in failure.message
    assert failure.detail == "ValueError: unknown codec at /srv/secret/path (unexpected; failed 3 times)"
    assert isinstance(failure, InvalidMessage), "dead-lettered and committed past, like an invalid record"


def test_describe_names_the_library_of_a_library_error() -> None:
    assert describe(_unknown_codec()).startswith("av.codec.codec.UnknownCodecError: ")
    assert describe(KeyError("stream")) == "KeyError: 'stream'"
    assert describe(AssertionError()) == "AssertionError"
    assert len(describe(ValueError("x" * 2000))) == 500
