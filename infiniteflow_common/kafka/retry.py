"""How long a consumer waits before it reads a failed record again."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with equal jitter: uniform in [c/2, c] for c = min(cap, base·2^(attempt-1)).

    Half of each delay is fixed so the retries of one message add up to a known minimum (long enough
    to ride out a restart of the object store or database); the other half spreads consumers apart.
    """
    ceiling = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    return float(ceiling / 2 + (rng or random).uniform(0, ceiling / 2))
