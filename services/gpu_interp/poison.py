"""The poison-chunk rule: what a claim does with a chunk whose earlier workers died or timed out.

An out-of-memory kill (a cgroup's SIGKILL), a segfault in a codec or the driver, a lease that ran
out: the worker leaves no result and never reaches the in-process memory step-down, and the chunk's
record is read again by the next worker, which would die the same way — one upload would crash-loop
every worker in turn. An error nobody classified (a `RuntimeError` from CUDA or cuDNN, a `ValueError`
from the codec library) is the same case without the death: it repeats on every worker, so it counts
too (`chunks.abandon`). A database outage does not: the worker could not report, it did not fail.
So a claim counts the chunk's earlier attempts that ended that way ("lost"
attempts, `chunks.claim`): below `max_attempts` the chunk is simply retried; at `max_attempts` it is
retried once more with the most conservative settings (lowest flow scale, one pair per engine call);
after that the job fails with `E_CHUNK_POISON`, naming the chunk. Pure: no Kafka, MinIO or SQL.
"""

from __future__ import annotations

from enum import StrEnum

from infiniteflow_common.errors import InfiniteFlowError


class AttemptPlan(StrEnum):
    """How a claimed chunk is tried."""

    NORMAL = "normal"  # with the worker's settings (and its in-process step-down on OOM)
    CONSERVATIVE = "conservative"  # once, at the bottom of the memory ladder
    POISON = "poison"  # not at all: the job fails


class ChunkPoisoned(InfiniteFlowError):  # noqa: N818 - reads as the verdict it reports
    """Every attempt at a chunk killed its worker, ran out its lease or failed unexpectedly: the job
    fails (permanent)."""

    code = "E_CHUNK_POISON"


def plan_attempt(lost_attempts: int, max_attempts: int) -> AttemptPlan:
    """The plan for a claim after `lost_attempts` attempts whose workers died or timed out.

    `max_attempts` lost attempts at the worker's settings earn one conservative try; one more loss
    (that try's) poisons the chunk.
    """
    if lost_attempts < 0 or max_attempts < 1:
        raise ValueError(f"lost_attempts {lost_attempts} and max_attempts {max_attempts} are out of range")
    if lost_attempts < max_attempts:
        return AttemptPlan.NORMAL
    if lost_attempts == max_attempts:
        return AttemptPlan.CONSERVATIVE
    return AttemptPlan.POISON


def poisoned(chunk_index: int, lost_attempts: int, *, min_scale: float) -> ChunkPoisoned:
    """The job failure for a chunk whose every attempt was lost; names the chunk and its attempts."""
    return ChunkPoisoned(
        f"chunk {chunk_index} failed, killed or stalled its worker on all {lost_attempts} attempts (the "
        f"last at flow scale {min_scale:g} with 1 frame pair per engine call) and left no result; the job "
        "cannot finish on these workers: give them more memory, or submit a smaller input or a lower "
        "multiplier"
    )
