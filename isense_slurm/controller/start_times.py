"""The models' measured starts, for the planner's break-even rule (planner/payback.py).

Read from the ledger (meter/start_queries.start_times: the median seconds from a worker
job's start to its registration, over each model's latest serving runs of the past
week), at most once a minute: a tick must stay cheap, and a median of up to 20 starts
moves slowly. A failed read keeps the last figures; with none, models count as not
measured, which lends as before the rule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from isense_slurm.planner import ModelStart

log = logging.getLogger("isense.controller")

# Reads the ledger: (since, epoch seconds) -> {model: (median seconds, runs measured)}.
StartReader = Callable[[float], dict[str, tuple[float, int]]]

WINDOW_SECONDS = 7 * 86400.0
REFRESH_SECONDS = 60.0


class StartTimes:
    def __init__(self, read: StartReader | None, clock: Callable[[], float] = time.time):
        self._read = read
        self._clock = clock
        self._starts: tuple[ModelStart, ...] = ()
        self._read_at: float | None = None

    def current(self) -> tuple[ModelStart, ...]:
        if self._read is None:
            return ()
        now = self._clock()
        if self._read_at is not None and now - self._read_at < REFRESH_SECONDS:
            return self._starts
        self._read_at = now
        try:
            times = self._read(now - WINDOW_SECONDS)
        except Exception as err:  # noqa: BLE001 - a ledger hiccup must not stop lending
            log.warning("measured starts not read from the ledger (kept the last ones): %s", err)
            return self._starts
        self._starts = tuple(ModelStart(model, seconds, count) for model, (seconds, count) in sorted(times.items()))
        return self._starts
