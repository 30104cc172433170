"""Backoff for the retries the backends do themselves (botocore retries the rest).

Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): the delay
before retry n is uniform in [0, min(cap, base * 2**n)], so many clients that
failed together do not come back together.
"""

from __future__ import annotations

import asyncio
import random

BASE_DELAY = 0.25
MAX_DELAY = 20.0  # botocore's standard mode caps its backoff at 20 s too


def backoff_delay(attempt: int, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to wait before retry number `attempt` (1-based)."""
    return random.uniform(0.0, min(cap, base * 2.0 ** max(attempt - 1, 0)))


async def backoff(attempt: int) -> None:
    await asyncio.sleep(backoff_delay(attempt))
