"""When to try a webhook again: the retry schedule with jitter, and the receiver's Retry-After.

Pure functions (no I/O), so the policy is unit-tested without servers or clocks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """`schedule[n-1]` is the delay before retry n; a retryable failure after the last one exhausts."""

    schedule: tuple[float, ...]
    jitter_ratio: float = 0.2
    retry_after_max_s: float = 3600.0

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first one plus one per schedule entry."""
        return 1 + len(self.schedule)

    def next_delay(
        self, attempt: int, *, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait after failed attempt `attempt` (1-based), or None when it was the last.

        The scheduled delay is jittered by ±`jitter_ratio`. A receiver's Retry-After is a floor (we never
        come back earlier than it asked) as long as it is at most `retry_after_max_s`; beyond that it is
        capped there, so one misconfigured header cannot park a webhook for weeks.
        """
        if attempt < 1:
            raise ValueError(f"attempts are numbered from 1, got {attempt}")
        if attempt > len(self.schedule):
            return None
        base = self.schedule[attempt - 1]
        factor = (rng or random).uniform(1.0 - self.jitter_ratio, 1.0 + self.jitter_ratio)
        delay = base * factor
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.retry_after_max_s))
        return delay


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds asked by a `Retry-After` header (delta-seconds or an HTTP date); None when absent/bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
