"""The ledger's record of how worker starts went: where a lend's first seconds go.

Phases of one run, from the job's start (workers.started_at, Slurm's) to its
registration (workers.serving_at, the gateway's): the worker process up, vLLM's process
spawned, vLLM healthy, its first completion answered; and vLLM's own weight-loading and
engine-init durations. The worker reports them once, on registering; the first report
of a run is kept. A mixin of meter.ledger.Ledger; the reads are in start_queries.py.
"""

import threading
from collections.abc import Mapping

from sqlite_utils import Database

from isense_slurm.contracts.control import START_PHASES
from isense_slurm.meter import start_queries
from isense_slurm.meter.connection import transaction

_COLUMNS = ", ".join(START_PHASES)


class StartRecords:
    """A mixin of meter.ledger.Ledger: its database, under its lock."""

    db: Database
    _lock: threading.RLock

    def record_start(self, job_id: str | int, phases: Mapping[str, float]) -> bool:
        """Keep a run's start phases (its latest run); False when the job has no run
        yet or its run already has them."""
        job_id = str(job_id)
        values = [phases.get(name) for name in START_PHASES]
        with self._lock, transaction(self.db.conn):
            row = self.db.execute("SELECT MAX(run) FROM workers WHERE job_id = ?", [job_id]).fetchone()
            if row is None or row[0] is None:
                return False
            cursor = self.db.execute(
                f"INSERT INTO worker_starts(job_id, run, {_COLUMNS}) VALUES (?, ?, {', '.join('?' * len(values))}) "
                "ON CONFLICT(job_id, run) DO NOTHING",
                [job_id, row[0], *values],
            )
        return cursor.rowcount == 1

    def start_times(self, since: float, last: int = 20) -> dict[str, tuple[float, int]]:
        """Per model, (median seconds from job start to serving, runs measured) of its
        `last` latest runs that served since `since`: the planner's break-even input."""
        with self._lock:
            return start_queries.start_times(self.db.conn, since, last)
