"""The ledger's record of how worker starts went: where a lend's first seconds go.

Phases of one run, from the job's start (workers.started_at, Slurm's) to its
registration (workers.serving_at, the gateway's): the worker process up, vLLM's process
spawned, vLLM healthy, its first completion answered; and vLLM's own weight-loading and
engine-init durations. The worker reports them once, on registering; the first report
of a run is kept.
"""

import sqlite3
import statistics
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from sqlite_utils import Database

from isense_slurm.contracts.control import START_PHASES
from isense_slurm.meter.connection import transaction

_COLUMNS = ", ".join(START_PHASES)

# What `isense status` shows, in order: (label, seconds of a StartInfo or None).
STEP_LABELS = ("worker", "vllm", "healthy", "probed", "serving")


@dataclass(frozen=True)
class StartInfo:
    """One run's start: seconds after the job's start at which each step was done
    (None: not reported), and vLLM's own durations."""

    job_id: str
    run: int
    started_at: float
    steps: dict[str, float | None]  # STEP_LABELS -> seconds after the job start
    weights_s: float | None
    engine_s: float | None

    @property
    def total(self) -> float | None:
        return self.steps.get("serving")


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


def starts_since(conn: sqlite3.Connection, since: float) -> list[StartInfo]:
    """The starts of runs that began at or after `since` and reached serving, oldest
    first; none from a ledger the daemon has not migrated to v5 yet (readers do not)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'worker_starts'").fetchone():
        return []
    rows = conn.execute(
        f"SELECT w.job_id, w.run, w.started_at, w.serving_at, {', '.join('s.' + n for n in START_PHASES)} "
        "FROM worker_starts s JOIN workers w ON w.job_id = s.job_id AND w.run = s.run "
        "WHERE w.started_at >= ? AND w.serving_at IS NOT NULL ORDER BY w.started_at",
        [since],
    ).fetchall()
    out = []
    for job_id, run, started, serving, up, spawned, healthy, probed, weights, engine in rows:
        times = (up, spawned, healthy, probed, serving)
        steps = {label: None if t is None else max(0.0, t - started) for label, t in zip(STEP_LABELS, times)}
        out.append(StartInfo(job_id, run, started, steps, weights, engine))
    return out


def median_steps(starts: list[StartInfo]) -> dict[str, float | None]:
    """The median seconds-after-job-start of each step, and of vLLM's durations."""
    columns: dict[str, list[float | None]] = {label: [s.steps[label] for s in starts] for label in STEP_LABELS}
    columns["weights_s"] = [s.weights_s for s in starts]
    columns["engine_s"] = [s.engine_s for s in starts]
    out: dict[str, float | None] = {}
    for name, column in columns.items():
        values = [v for v in column if v is not None]
        out[name] = statistics.median(values) if values else None
    return out
