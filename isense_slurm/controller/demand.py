"""Per-model demand for the planner, from the gateway's counters (gateway/registry.py).

The gateway queues nothing (a request for a model with no live worker gets a 429 at
once), so `queued` stays 0: demand is the 429s since the last tick, and the rate.
The counters belong to the gateway's event loop; they are copied there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from isense_slurm.planner import Demand

READ_TIMEOUT_SECONDS = 1.0


def _counters(registry) -> dict[str, tuple[int, int]]:
    return {model: (s.requests, s.rejected) for model, s in list(registry.stats.items())}


class GatewayDemand:
    """Callable from the controller's thread: returns this tick's Demand per model."""

    def __init__(
        self, registry, loop: asyncio.AbstractEventLoop | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.registry = registry
        self.loop = loop
        self.clock = clock
        self._last: dict[str, tuple[int, int]] = {}
        self._last_at: float | None = None

    def _read(self) -> dict[str, tuple[int, int]]:
        if self.loop is None:
            return _counters(self.registry)

        async def read():
            return _counters(self.registry)

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(READ_TIMEOUT_SECONDS)

    def __call__(self) -> tuple[Demand, ...]:
        counters = self._read()
        now = self.clock()
        elapsed = (now - self._last_at) if self._last_at is not None else 0.0
        out = []
        for model, (requests, rejected) in sorted(counters.items()):
            last_requests, last_rejected = self._last.get(model, (requests, rejected))
            rate = (requests - last_requests) / elapsed if elapsed > 0 else 0.0
            out.append(Demand(model, rejected=max(0, rejected - last_rejected), requests_per_second=round(rate, 3)))
            self._last[model] = (requests, rejected)
        self._last_at = now
        return tuple(out)
