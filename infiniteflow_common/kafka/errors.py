"""What the reliable consumer raises itself, and the decision it is given about permanent failures."""

from __future__ import annotations

from collections.abc import Callable

from infiniteflow_common.errors import InfiniteFlowError

PermanentFailure = Callable[[BaseException], InfiniteFlowError | None]
"""Whether an error escaping a handler is one no retry can fix: the job failure it stands for, or None.

The consumer does not know the outside world (object stores, databases); its composition root does,
and hands it this decision (`storage.permanent_storage_failure` for a gone or forbidden object)."""


class ConsumerStopped(InfiniteFlowError):  # noqa: N818 - a state, not a failure of this message
    """The consumer gave up (retries exhausted or DLQ breaker open) and commits nothing more."""

    code = "E_CONSUMER_STOPPED"
