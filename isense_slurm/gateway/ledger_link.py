"""The gateway's calls into the ledger's control plane, off the event loop.

One thread runs them all in order (worker events must not overtake each other); the
loop only ever waits on them where it has to (the key refresh). Request rows go through
meter.writer.RequestWriter, which has its own thread.
"""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from isense_slurm.contracts.states import EndReason
from isense_slurm.gateway.budgets import period_starts
from isense_slurm.meter import limits, usage
from isense_slurm.meter.ledger import Ledger
from isense_slurm.meter.limits import LimitBook, Limits

# Longest wait for this process's queued request rows before the spend is read.
FLUSH_SECONDS = 2.0

log = logging.getLogger("isense.gateway")

# What the ledger accepts as the reason of an 'ended' worker.
_END_REASONS = set(EndReason)


def end_reason(reason: str | None) -> str | None:
    """A worker's deregister reason as the ledger's end reason; None leaves it to the
    controller (a SIGTERM is preemption or time limit: Slurm knows which)."""
    if reason in _END_REASONS:
        return reason
    if reason == "heartbeat timeout":
        return EndReason.LOST
    return None


class LedgerLink:
    def __init__(self, path):
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="isense-ledger")
        self._ledger: Ledger | None = None
        self._keys_generation: int | None = None

    def _open(self) -> Ledger:
        self._ledger = Ledger.open(self.path)
        return self._ledger

    def _opened(self) -> Ledger:
        assert self._ledger is not None, "LedgerLink.start() first"
        return self._ledger

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def _changed_keys(self) -> dict | None:
        generation = self._opened().keys_generation()
        if generation == self._keys_generation:
            return None
        keys = self._opened().active_key_hashes()
        self._keys_generation = generation
        return keys

    async def changed_keys(self) -> dict | None:
        """Active keys (sha256 -> KeyInfo) if they changed since the last call, else None."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._changed_keys)

    def _limits(self, known: LimitBook, now: float, flush: Callable[[float], None] | None):
        ledger = self._opened()
        book = limits.read_book(ledger) if limits.generation(ledger) != known.generation else None
        current = book or known
        keys, groups = current.budgeted()
        day, month = period_starts(now)
        if not keys and not groups:  # no budget: no spend to read, and no writer to wake
            return book, {}, (day, month)
        if flush is not None:
            flush(FLUSH_SECONDS)  # so the spend read holds every row this process booked
        with_total = any(lim.budget_total_nanos is not None for lim in current.limits.values())
        spent = usage.spend(ledger, keys, groups, day_start=day, month_start=month, with_total=with_total)
        return book, spent, (day, month)

    async def limits(self, known: LimitBook, now: float, flush: Callable[[float], None] | None = None):
        """(the limits if they changed since `known`, else None; spend of budgeted
        subjects; the day and month starts the spend is for), read off the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._limits, known, now, flush)

    def _usage(self, key_id: int, since: float, until: float, now: float):
        ledger = self._opened()
        book = limits.read_book(ledger)
        group = book.groups_of_keys.get(key_id)
        subjects: list[tuple[str, str | None]] = [(limits.key_subject(key_id), None)]
        if group is not None:
            subjects.append((limits.group_subject(group), group))
        day, month = period_starts(now)
        keys = [key_id]
        groups = [group] if group is not None else []
        spent = usage.spend(ledger, keys, groups, day_start=day, month_start=month)
        budgets = [(s, name, book.limits.get(s, Limits()), spent.get(s, (0, 0, 0))) for s, name in subjects]
        return usage.usage_rows(ledger, [key_id], since, until), budgets

    async def usage(self, key_id: int, since: float, until: float, now: float):
        """(a key's UsageRows for since <= ts < until, [(subject, group, Limits, spent)])."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._usage, key_id, since, until, now)

    def worker_event(self, job_id: str, *, state: str, **fields) -> Future:
        """Queue a worker state change; failures are logged, never raised at the caller."""
        future = self._executor.submit(self._opened().worker_event, job_id, state=state, **fields)
        future.add_done_callback(_log_failure)
        return future

    def worker_start(self, job_id: str, phases: dict[str, float]) -> Future:
        """Queue a worker's start phases, behind its 'serving' event (one thread, in order)."""
        future = self._executor.submit(self._opened().record_start, job_id, phases)
        future.add_done_callback(_log_failure)
        return future

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._ledger is not None:
            self._ledger.close()


def _log_failure(future: Future) -> None:
    err = future.exception()
    if err is not None:
        log.error("ledger: worker event or start not recorded: %s", err)
