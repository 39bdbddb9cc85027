"""The gateway's calls into the ledger's control plane, off the event loop.

One thread runs them all in order (worker events must not overtake each other); the
loop only ever waits on them where it has to (the key refresh). Request rows go through
meter.writer.RequestWriter, which has its own thread.
"""

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor

from isense_slurm.contracts.states import EndReason
from isense_slurm.meter.ledger import Ledger

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

    def worker_event(self, job_id: str, *, state: str, **fields) -> Future:
        """Queue a worker state change; failures are logged, never raised at the caller."""
        future = self._executor.submit(self._opened().worker_event, job_id, state=state, **fields)
        future.add_done_callback(_log_failure)
        return future

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._ledger is not None:
            self._ledger.close()


def _log_failure(future: Future) -> None:
    err = future.exception()
    if err is not None:
        log.error("ledger: worker event not recorded: %s", err)
