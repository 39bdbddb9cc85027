"""The ledger's worker runs: one row per run of a worker job, its state moving forward.

A mixin of meter.ledger.Ledger (its database, under its lock).
"""

import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

from isense_slurm.meter.connection import transaction
from isense_slurm.meter.rows import END_REASONS, WORKER_COLUMNS, WORKER_STATES, WorkerInfo

# Timestamp column set the first time a worker run reaches each state.
STATE_TIME_COLUMN: dict[str, str] = {
    "lent": "started_at",
    "serving": "serving_at",
    "draining": "draining_at",
    "ended": "ended_at",
}


class WorkerRecords:
    db: Database
    _lock: threading.RLock

    def worker_event(
        self,
        job_id: str | int,
        *,
        state: str,
        node: str | None = None,
        gpus: int | str | Sequence[int | str] | None = None,
        model: str | None = None,
        address: str | None = None,
        reason: str | None = None,
        at: float | None = None,
    ) -> WorkerInfo:
        """Record what happened to a worker job; returns its row as it now stands.

        Reports come from several processes (controller, gateway, worker, epilog) and
        may arrive late or twice, so within one run the state only moves forward
        (lent -> serving -> draining -> ended), each state's time is kept from its first
        report (the run's start from its earliest: a late 'lent' report may date it
        back), and an 'ended' report's reason wins over earlier ones. A 'lent' or
        'serving' report for an ended job starts a new run: Slurm requeued it.
        `gpus`: a count (int) or the GPU indices ("0,1" or a sequence).
        """
        if state not in WORKER_STATES:
            raise ValueError(f"worker state must be one of {WORKER_STATES}, got {state!r}")
        if reason is not None and reason not in END_REASONS:
            raise ValueError(f"worker end reason must be one of {END_REASONS}, got {reason!r}")
        job_id = str(job_id)
        at = time.time() if at is None else at
        gpu_count, gpu_ids = _normalise_gpus(gpus)
        given = {"node": node, "gpus": gpu_count, "gpu_ids": gpu_ids, "model": model, "address": address}
        with self._lock, transaction(self.db.conn):
            current = self._latest_worker(job_id)
            if current is None or (current.state == "ended" and state in ("lent", "serving")):
                if current is not None:  # a requeued job runs the same script: same model and size
                    given["model"] = model or current.model
                    given["gpus"] = gpu_count if gpu_count is not None else current.gpus
                self._insert_run(job_id, 0 if current is None else current.run + 1, state, reason, given, at)
            else:
                self._update_run(current, state, reason, given, at)
            latest = self._latest_worker(job_id)
        assert latest is not None  # the run was just inserted or updated
        return latest

    def _insert_run(
        self, job_id: str, run: int, state: str, reason: str | None, given: dict[str, Any], at: float
    ) -> None:
        """A new run of a worker job (its first, or Slurm requeued it)."""
        row = {"job_id": job_id, "run": run, "state": state, "reason": reason, **given}
        row.update(started_at=at, serving_at=None, draining_at=None, ended_at=None, updated_at=at)
        row[STATE_TIME_COLUMN[state]] = at
        columns = ", ".join(row)
        self.db.execute(f"INSERT INTO workers({columns}) VALUES ({', '.join('?' * len(row))})", list(row.values()))

    def _update_run(
        self, current: WorkerInfo, state: str, reason: str | None, given: dict[str, Any], at: float
    ) -> None:
        """A later report on the current run: the state only moves forward, first times stay."""
        rank = WORKER_STATES.index
        new_state = state if rank(state) >= rank(current.state) else current.state
        if state == "ended" and current.state != "ended":
            new_reason = reason or current.reason
        else:
            new_reason = current.reason or reason
        changes = {k: v for k, v in given.items() if v is not None}
        changes.update(state=new_state, reason=new_reason, updated_at=max(at, current.updated_at))
        time_column = STATE_TIME_COLUMN[state]
        first = getattr(current, time_column)
        # A run's start is its earliest report: a requeued run is first heard of when its
        # worker registers, and the controller dates it back to Slurm's start later.
        if first is None or (state == "lent" and at < first):
            changes[time_column] = at
        assignments = ", ".join(f"{column} = ?" for column in changes)
        self.db.execute(
            f"UPDATE workers SET {assignments} WHERE job_id = ? AND run = ?",
            [*changes.values(), current.job_id, current.run],
        )

    def workers(self, active_only: bool = False) -> list[WorkerInfo]:
        """Every worker run (oldest first), or only those not ended."""
        where = "WHERE state != 'ended'" if active_only else ""
        with self._lock:
            rows = list(self.db.query(f"SELECT {WORKER_COLUMNS} FROM workers {where} ORDER BY started_at, id"))
        return [WorkerInfo(**row) for row in rows]

    def worker(self, job_id: str | int) -> WorkerInfo | None:
        """The latest run of one worker job, or None (the controller asks whether it served)."""
        with self._lock:
            return self._latest_worker(str(job_id))

    def _latest_worker(self, job_id: str) -> WorkerInfo | None:
        row = self.db.execute(
            f"SELECT {WORKER_COLUMNS} FROM workers WHERE job_id = ? ORDER BY run DESC LIMIT 1", [job_id]
        ).fetchone()
        return WorkerInfo(*row) if row else None


def _normalise_gpus(gpus: int | str | Sequence[int | str] | None) -> tuple[int | None, str | None]:
    if gpus is None:
        return None, None
    if isinstance(gpus, bool):
        raise ValueError("gpus must be a count or GPU indices")
    if isinstance(gpus, int):
        return gpus, None
    ids = [part.strip() for part in gpus.split(",")] if isinstance(gpus, str) else [str(g) for g in gpus]
    ids = [part for part in ids if part]
    return len(ids), ",".join(ids)
