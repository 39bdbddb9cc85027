"""Spend against budgets, as one gateway process sees it. Pure.

What a subject (a key or a group) spent = the ledger's sums at the last refresh (read
every second, so they include what every gateway on the ledger committed) + what this
process booked since that read began. A refresh moves this process's fresh spend aside
while the ledger is read (`begin`), and drops it once the read is in (`end`): the
caller flushes the request writer before reading, so everything booked before `begin`
is in the read. A failed read puts it back (`abort`).
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from isense_slurm.meter.limits import BUDGET_PERIODS, Limits
from isense_slurm.meter.usage import DAY_SECONDS, Spend


def period_starts(now: float) -> tuple[float, float]:
    """Unix seconds of the UTC day's and the UTC month's start."""
    day = now - now % DAY_SECONDS
    month = datetime.fromtimestamp(day, UTC).replace(day=1).timestamp()
    return day, month


def next_reset(period: str, now: float) -> float | None:
    """When a period's budget starts afresh (None: a total budget never does)."""
    day, month = period_starts(now)
    if period == "day":
        return day + DAY_SECONDS
    if period == "month":
        start = datetime.fromtimestamp(month, UTC)
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1).timestamp()
    return None


def exhausted(limits: Limits, spent: tuple[int, int, int]) -> tuple[str, int, int] | None:
    """(period, budget, spent) of the first budget used up, or None. A budget is used up
    when the spend reached it: a budget of 0 lets nothing through."""
    budgets = limits.budgets()
    for period, amount in zip(BUDGET_PERIODS, spent):
        budget = budgets.get(period)
        if budget is not None and amount >= budget:
            return period, budget, amount
    return None


def remaining(limits: Limits, spent: tuple[int, int, int]) -> dict[str, int | None]:
    """period -> budget left in nanos (never below 0); None where no budget is set."""
    budgets = limits.budgets()
    return {
        period: None if period not in budgets else max(0, budgets[period] - amount)
        for period, amount in zip(BUDGET_PERIODS, spent)
    }


@dataclass
class SpendView:
    ledger: Spend = field(default_factory=dict)
    starts: tuple[float, float] = (0.0, 0.0)  # the day and month the ledger sums are for
    fresh: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    reading: dict[str, int] = field(default_factory=dict)

    def add(self, subject: str, nanos: int) -> None:
        if nanos:
            self.fresh[subject] += nanos

    def spent(self, subject: str, now: float) -> tuple[int, int, int]:
        day, month, total = self.ledger.get(subject, (0, 0, 0))
        if now >= self.starts[0] + DAY_SECONDS:  # the sums are of an earlier day (or month)
            day_start, month_start = period_starts(now)
            if day_start > self.starts[0]:
                day = 0
            if month_start > self.starts[1]:
                month = 0
        local = self.fresh.get(subject, 0) + self.reading.get(subject, 0)
        return day + local, month + local, total + local

    def begin(self) -> None:
        self.abort()  # a read still out (not expected): its spend stays counted
        self.reading, self.fresh = dict(self.fresh), defaultdict(int)

    def end(self, ledger: Spend, starts: tuple[float, float]) -> None:
        self.ledger, self.starts, self.reading = ledger, starts, {}

    def abort(self) -> None:
        for subject, nanos in self.reading.items():
            self.fresh[subject] += nanos
        self.reading = {}
