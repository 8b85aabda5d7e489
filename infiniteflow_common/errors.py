"""The two kinds of failure every consumer distinguishes, each with a stable code.

`InvalidMessage` (and its subclasses) is permanent: retrying cannot help, so the message goes to the
topic's DLQ with the code and reason, and the consumer commits past it. `TransientError` is worth
retrying with backoff (broker, object store, database, GPU memory); after the bounded retries the
consumer stops without committing so a restart resumes from the same offset.
"""

from __future__ import annotations


class InfiniteFlowError(Exception):
    """Base error: a stable machine-readable `code` and a message a person can act on."""

    code: str = "E_INTERNAL"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidMessage(InfiniteFlowError):  # noqa: N818 - the name of the concept, as in arroyo
    """A message that can never be processed: it goes to the DLQ and the consumer commits past it.

    `job_id`: the job that fails with it, where that is not the record's own (see `JobScopedError`).
    """

    code = "E_INVALID_MESSAGE"
    job_id: str | None = None


class UnknownSchemaError(InvalidMessage):
    """The payload names a writer schema this build does not know."""

    code = "E_UNKNOWN_SCHEMA"


class DecodeError(InvalidMessage):
    """The payload could not be decoded with its declared writer schema."""

    code = "E_DECODE"


class WorkCancelled(InfiniteFlowError):  # noqa: N818 - a decision, not a failure
    """The job was cancelled while this stage worked on it: stop, keep nothing, commit the record."""

    code = "E_JOB_CANCELLED"


class HandedBack(InfiniteFlowError):  # noqa: N818 - a decision, not a failure
    """The process is stopping and gave the message's work back: leave it uncommitted, do not retry.

    The partition's next owner reads the record again from the last committed offset.
    """

    code = "E_HANDED_BACK"


class TransientError(InfiniteFlowError):
    """A failure of something outside the message (a server, the GPU); worth retrying later."""

    code = "E_TRANSIENT"


class JobScopedError(Exception):
    """`error` was raised while working for `job_id`, which need not be the job of the record in hand.

    Under fair dispatch a `chunk.ready` record is a doorbell: the worker may claim another job's chunk.
    The consumer handles `error` as if it had been raised alone; only when it dead-letters the record
    does it fail `job_id` instead of the job the record's key names. Never wraps an `InvalidMessage` or
    a `HandedBack`: the consumer acts on those by their type.
    """

    def __init__(self, job_id: str, error: Exception) -> None:
        super().__init__(f"while working for job {job_id}: {error}")
        self.job_id = job_id
        self.error = error

    @staticmethod
    def unwrap(exc: Exception) -> tuple[Exception, str | None]:
        """The error itself and the job it names (None: the record's own job)."""
        if isinstance(exc, JobScopedError):
            return exc.error, exc.job_id
        return exc, None
