"""The limit check before a request is forwarded: budgets, then concurrency, requests
and tokens per minute, for the key and for its group.

Per request: a dict lookup when the key has no limits; a few more and a deque append
when it has (bench/validate.py times it). Budgets use the spend of every gateway on
the ledger (budgets.py, refreshed every REFRESH_SECONDS, or every FAST_REFRESH_SECONDS
while a budget is about to run out); rates and concurrency are counted in this process
only.

A request admitted before a budget runs out is served to its end and billed, so spend
may pass a budget by what was in flight (see docs/operator-guide.md, "Plans and limits").
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from isense_slurm.gateway.budgets import SpendView, exhausted, next_reset
from isense_slurm.gateway.windows import Window, retry_after
from isense_slurm.meter import money
from isense_slurm.meter.limits import BUDGET_PERIODS, EMPTY_BOOK, LimitBook, Limits, group_subject, key_subject
from isense_slurm.meter.money import PriceLike
from isense_slurm.meter.rows import RequestRow
from isense_slurm.meter.usage import Spend

log = logging.getLogger("isense.gateway")

REFRESH_SECONDS = 1.0
# Near a budget's end the other processes' spend is read ten times as often: what they
# admit between two reads is what a budget can overshoot by.
FAST_REFRESH_SECONDS = 0.1
NEAR_END_SECONDS = 5.0  # "about to run out": at the pace of the last read, within this
PERIOD_WORDS = {"day": "daily", "month": "monthly", "total": "total"}

# (book read when the limits changed, else None; spend; the period starts it is for)
Loaded = tuple[LimitBook | None, Spend, tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: a rate limit (retry after some seconds) or a used-up budget."""

    message: str
    quota: bool  # True: a budget (insufficient_quota); False: a rate limit
    retry_after: int | None = None


class Gate:
    def __init__(
        self,
        prices: Mapping[str, PriceLike],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.rates = {model: money.price_nanos_per_mtok(price) for model, price in prices.items()}
        self.book = EMPTY_BOOK
        self.spend = SpendView()
        self.clock, self.wall = clock, wall
        self.requests: dict[str, Window] = {}
        self.tokens: dict[str, Window] = {}
        self.in_flight: dict[str, int] = {}
        self.near_end = False  # a budget runs out within NEAR_END_SECONDS at the current pace
        self._last_read: tuple[float, dict[str, tuple[int, int, int]]] | None = None

    # --- per request ---------------------------------------------------------------

    def admit(self, key_id: int) -> Refusal | tuple[str, ...]:
        """A refusal, or the subjects whose concurrency the request holds (release them)."""
        subjects = self.book.subjects(key_id)
        if not subjects:
            return ()
        now, wall = self.clock(), self.wall()
        for subject, limits in subjects:
            refusal = self._check(subject, limits, now, wall)
            if refusal is not None:
                return refusal
        held = []
        for subject, limits in subjects:
            if limits.rpm is not None:
                self.requests.setdefault(subject, Window()).add(now)
            if limits.concurrent is not None:
                self.in_flight[subject] = self.in_flight.get(subject, 0) + 1
                held.append(subject)
        return tuple(held)

    def release(self, held: tuple[str, ...]) -> None:
        for subject in held:
            self.in_flight[subject] -= 1

    def _check(self, subject: str, limits: Limits, now: float, wall: float) -> Refusal | None:
        whose = "this key's" if subject.startswith("key:") else "the key group's"
        used = exhausted(limits, self.spend.spent(subject, wall))
        if used is not None:
            period, budget, spent = used
            reset = next_reset(period, wall)
            when = f"; it renews at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(reset))}" if reset else ""
            return Refusal(
                f"{whose} {PERIOD_WORDS[period]} budget of {money.format_money(budget, '')} is used up "
                f"(spent {money.format_money(spent, '')}){when}",
                quota=True,
            )
        if limits.concurrent is not None and self.in_flight.get(subject, 0) >= limits.concurrent:
            return Refusal(f"{whose} limit of {limits.concurrent} concurrent requests is reached", False, 1)
        for limit, windows, what in ((limits.rpm, self.requests, "requests"), (limits.tpm, self.tokens, "tokens")):
            if limit is None:
                continue
            window = windows.get(subject)
            wait = window.wait_below(limit, now) if window is not None else (0.0 if limit > 0 else 60.0)
            if wait > 0:
                return Refusal(f"{whose} limit of {limit} {what} per minute is reached", False, retry_after(wait))
        return None

    def on_row(self, row: RequestRow) -> None:
        """A booked request row: its tokens in the token windows, its cost in the spend."""
        if row.key_id is None:
            return
        subjects = [key_subject(row.key_id)]
        group = self.book.groups_of_keys.get(row.key_id)
        if group is not None:
            subjects.append(group_subject(group))
        rate = self.rates.get(row.model)
        cost = 0
        if rate is not None:
            cost = money.revenue_from_rates(rate, row.prompt_tokens, row.completion_tokens, row.cached_tokens)
        tokens = row.prompt_tokens + row.completion_tokens
        now = self.clock()
        for subject in subjects:
            self.spend.add(subject, cost)
            limits = self.book.limits.get(subject)
            if limits is not None and limits.tpm is not None:
                self.tokens.setdefault(subject, Window()).add(now, tokens)

    # --- refresh from the ledger -----------------------------------------------------

    async def refresh(self, load: Callable[[LimitBook, float], Awaitable[Loaded]]) -> None:
        """One read of the limits (when changed) and the spend of budgeted subjects."""
        self.spend.begin()
        try:
            book, spend, starts = await load(self.book, self.wall())
        except BaseException:
            self.spend.abort()
            raise
        if book is not None:
            self.install(book)
        self.spend.end(spend, starts)
        self._judge_pace()

    def _judge_pace(self) -> None:
        """near_end: at the pace between the last two reads, a budget runs out soon."""
        wall = self.wall()
        now = {subject: self.spend.spent(subject, wall) for subject, limits in self.book.limits.items()}
        last, self._last_read = self._last_read, (wall, now)
        if last is None or wall <= last[0]:
            return
        seconds, before = wall - last[0], last[1]
        self.near_end = any(
            0 < budget - spent[i] <= NEAR_END_SECONDS * max(0, spent[i] - before.get(subject, spent)[i]) / seconds
            for subject, spent in now.items()
            for i, budget in _budget_slots(self.book.limits[subject])
        )

    def install(self, book: LimitBook) -> None:
        """New limits: windows of subjects that lost their limits are dropped."""
        self.book = book
        for windows in (self.requests, self.tokens):
            for subject in [s for s in windows if s not in book.limits]:
                del windows[subject]

    async def run(self, load: Callable[[LimitBook, float], Awaitable[Loaded]]) -> None:
        """Refresh forever; a failed read keeps the last limits and spend (and logs)."""
        while True:
            await asyncio.sleep(FAST_REFRESH_SECONDS if self.near_end else REFRESH_SECONDS)
            try:
                await self.refresh(load)
            except Exception as err:  # noqa: BLE001 - busy, unreadable: keep the last good figures
                log.warning("limits refresh failed: %s", err)


def _budget_slots(limits: Limits) -> list[tuple[int, int]]:
    """(index in a spend triple, budget) of each budget a subject has."""
    budgets = limits.budgets()
    return [(i, budgets[period]) for i, period in enumerate(BUDGET_PERIODS) if period in budgets]
