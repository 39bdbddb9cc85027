"""A request's ledger rows and the per-model counters they move.

The answer's row is committed before the answer goes out (`commit`); rows of failed
attempts and of streams whose client left are queued without waiting (`record`).
Every row but an aborted attempt counts in the model's completed requests and tokens.
"""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial

from isense_slurm.contracts.states import RequestStatus
from isense_slurm.gateway.calls import Call, attempt_row_id, make_row
from isense_slurm.gateway.registry import LiveWorker, ModelStats
from isense_slurm.meter.rows import RequestRow
from isense_slurm.meter.writer import RequestWriter

log = logging.getLogger("isense.gateway")


class Booking:
    """Writes request rows through the ledger writer; counts them in `stats(model)`."""

    def __init__(
        self,
        writer: RequestWriter,
        stats: Callable[[str], ModelStats],
        on_row: Callable[[RequestRow], None] | None = None,
    ):
        self.writer = writer
        self.stats = stats
        self.on_row = on_row  # the limit gate: tokens and spend of every row, as it is booked

    def _count(self, row: RequestRow) -> None:
        if self.on_row is not None:
            self.on_row(row)
        if row.status == RequestStatus.ABORTED:
            return
        stats = self.stats(row.model)
        stats.completed += 1
        stats.prompt_tokens += row.prompt_tokens
        stats.completion_tokens += row.completion_tokens

    async def commit(self, row: RequestRow) -> bool:
        """Write a row and wait until it is committed; False (logged) if it could not be.

        A lone row is committed on the loop itself when the ledger is free at once (a
        commit of one row: tens of microseconds, no fsync); otherwise it joins the
        writer thread's next group commit."""
        self._count(row)
        try:
            if self.writer.commit_now(row):
                return True
            await asyncio.wrap_future(self.writer.submit(row))
            return True
        except Exception as err:  # noqa: BLE001 - whatever the writer failed with, the caller answers 500 and serves on
            log.error("ledger: row %s not committed: %s", row.id, err)
            return False

    def record(self, row: RequestRow) -> None:
        """Write a row without waiting (failed attempts, streams whose client left)."""
        self._count(row)
        try:
            self.writer.submit(row).add_done_callback(partial(_log_row_failure, row.id))
        except (TypeError, RuntimeError) as err:  # not a row, or the writer is closed
            log.error("ledger: row %s not queued: %s", row.id, err)

    def failed_attempt(self, call: Call, worker: LiveWorker, attempt: int, error: str, *, streamed: bool) -> None:
        """A worker failed this attempt: an 'aborted' row with 0 tokens (the client got none of
        them: the retry answers) and one more retry in the model's counters."""
        self.record(
            make_row(
                call,
                row_id=attempt_row_id(call, attempt),
                worker=worker,
                status=RequestStatus.ABORTED,
                streamed=streamed,
                error=error,
                attempts=attempt,
            )
        )
        self.stats(call.model).retries += 1


def _log_row_failure(row_id: str, future: Future) -> None:
    if future.exception() is not None:
        log.error("ledger: row %s not written: %s", row_id, future.exception())
