"""Sliding one-minute windows for rate limits, and the Retry-After they give. Pure.

A window keeps (time, amount) for the last `seconds`: one entry per admitted request
for requests per minute, the tokens of each finished request for tokens per minute.
Its memory is bounded by what the limit lets in per window.
"""

import math
from collections import deque

WINDOW_SECONDS = 60.0


class Window:
    def __init__(self, seconds: float = WINDOW_SECONDS):
        self.seconds = seconds
        self._entries: deque[tuple[float, int]] = deque()
        self._total = 0

    def _expire(self, now: float) -> None:
        cutoff = now - self.seconds
        entries = self._entries
        while entries and entries[0][0] <= cutoff:
            self._total -= entries.popleft()[1]

    def add(self, now: float, amount: int = 1) -> None:
        if amount > 0:
            self._entries.append((now, amount))
            self._total += amount

    def total(self, now: float) -> int:
        self._expire(now)
        return self._total

    def wait_below(self, limit: int, now: float) -> float:
        """Seconds until the total falls below `limit` (0 when it is already below).

        Entries leave the window in order; a limit of 0 is never met: a whole window."""
        self._expire(now)
        if self._total < limit:
            return 0.0
        if limit <= 0:
            return self.seconds
        left = self._total
        for at, amount in self._entries:
            left -= amount
            if left < limit:
                return max(0.0, at + self.seconds - now)
        return self.seconds  # not reached: the loop empties the window


def retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header: rounded up, at least 1."""
    return max(1, math.ceil(seconds))
