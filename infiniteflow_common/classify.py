"""Which failures are known to pass on their own, and what an unclassified one becomes (pure).

A consumer retries a transient failure (a server of the stack unreachable or restarting) and, when
that does not end, stops without committing so a restart resumes: a restart may help. Everything else
a handler raises that nobody classified (a `ValueError` from a codec library, a `RuntimeError` from the
GPU stack, a `KeyError` from a bug) is retried a bounded number of times too, in case it was a fluke,
and then fails the record's job with `E_INTERNAL`: stopping the process would not help, its restart
would read the same record and fail the same way, and every record behind it would wait.

`is_transient` is the list of what is known to pass; keep it to failures of the outside world.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import httpx
import sqlalchemy.exc
import urllib3.exceptions
from confluent_kafka import KafkaException
from minio.error import MinioException

from infiniteflow_common.errors import HandedBack, InvalidMessage, TransientError

INTERNAL_CODE = "E_INTERNAL"
INTERNAL_MESSAGE = "an internal error stopped this job; operators have the details"
"""What the API and the webhook say about an unexpected error: never its text (it may carry paths,
addresses or library internals); the service's JSON log and the dead letter carry it with the job id."""

# SQLSTATE classes of a database that is unreachable, restarting, overloaded or that aborted the
# transaction for concurrency: 08 connection exception, 40 transaction rollback (serialization
# failure, deadlock), 53 insufficient resources (too many connections), 57 operator intervention
# (admin shutdown, cannot connect now), 58 system error (I/O error).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TransientError,
    HandedBack,
    OSError,  # connection refused or reset, timeouts (TimeoutError), DNS failures, …
    MinioException,  # those no retry can fix are picked out first (`storage.permanent_storage_failure`)
    urllib3.exceptions.HTTPError,  # the object store's transport: MaxRetryError, ProtocolError, …
    KafkaException,
    httpx.TransportError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed" and the like, raised by the client side
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection came free in time
)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from (`raise … from`, a driver error SQLAlchemy wraps), in order.

    Only explicit causes: an exception raised while another was being handled (`__context__`) is a
    failure of its own, not a wrapper of that one.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = current.__cause__ or (orig if isinstance(orig, BaseException) else None)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc`, or what it was raised from, is a failure known to pass without a change to the code.

    An `InvalidMessage` never is. A database connection lost mid-query reaches us as SQLAlchemy's plain
    `DBAPIError` wrapping the driver's error: its SQLSTATE class (`TRANSIENT_SQLSTATE_CLASSES`) decides.
    """
    if isinstance(exc, InvalidMessage):
        return False
    for error in causes(exc):
        if isinstance(error, _TRANSIENT_TYPES):
            return True
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return True
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES:
            return True
    return False


def describe(exc: BaseException, limit: int = 500) -> str:
    """`Type: message` of an exception, for operators (logs, dead letters), cut to `limit` characters."""
    name = type(exc).__qualname__
    module = type(exc).__module__
    if module not in {"builtins", "__main__"}:
        name = f"{module}.{name}"
    text = str(exc)
    return f"{name}: {text}"[:limit] if text else name


class UnexpectedFailure(InvalidMessage):
    """An unclassified error that outlasted its retries: the record goes to the DLQ, its job fails.

    `message` is what the job's user sees (`INTERNAL_MESSAGE`); `detail` is the error itself, for the
    dead letter's reason and the log.
    """

    code = INTERNAL_CODE

    def __init__(self, exc: BaseException, *, attempts: int) -> None:
        super().__init__(INTERNAL_MESSAGE)
        self.detail = f"{describe(exc)} (unexpected; failed {attempts} times)"
