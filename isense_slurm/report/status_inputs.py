"""Gathering what `isense status` and `isense top` show: the Slurm views through the
access layer, the ledger figures through the meter's read-only queries."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from isense_slurm.errors import UsageError
from isense_slurm.meter import earnings as queries
from isense_slurm.meter import start_queries, status_queries
from isense_slurm.periods import utc_midnight
from isense_slurm.report.earnings import lent_seconds
from isense_slurm.report.status_model import LedgerFigures
from isense_slurm.slurm.models import Job, Node, Partition

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class SlurmState:
    nodes: list[Node]
    jobs: list[Job]
    partitions: list[Partition]


def read_slurm(backend) -> SlurmState:
    # Only jobs that hold nodes matter here, but 22.05's --json ignores filters anyway.
    return SlurmState(backend.nodes(), backend.jobs(), backend.partitions())


def check_partition(state: SlurmState, name: str | None) -> None:
    """UsageError (exit 2) for a -p that no partition and no node knows."""
    if name is None:
        return
    known = [p.name for p in state.partitions]
    for node in state.nodes:
        known.extend(p for p in node.partitions if p not in known)
    if name not in known:
        raise UsageError(f"-p {name}: no such partition (known: {', '.join(known) or 'none'})")


def day_start(now: float) -> datetime:
    return utc_midnight(datetime.fromtimestamp(now, UTC).date())


def read_figures(conn: sqlite3.Connection | None, now: float, window: float = WINDOW_SECONDS) -> LedgerFigures:
    """Live workers and per-node request sums for the last `window` seconds and today (UTC)."""
    if conn is None:
        return LedgerFigures(window_seconds=window)
    midnight = day_start(now).timestamp()
    # A run without a GPU count counts 1 here (earnings uses the model's configured count).
    lent = lent_seconds(queries.worker_runs(conn, midnight, now), midnight, now, now, None, "", {})
    starts = start_queries.starts_since(conn, midnight)
    return LedgerFigures(
        workers=status_queries.active_workers(conn),
        last_minute=queries.request_sums(conn, now - window, now, "node"),
        today=status_queries.sums_by_node(conn, midnight, now),
        window_seconds=window,
        lent_today=lent.get(None, (0.0, 0.0)),
        starts_today=len(starts),
        start_steps=start_queries.median_steps(starts),
    )


def open_ledger(explicit: str | None, configured: Path) -> tuple[sqlite3.Connection | None, str | None]:
    """(read-only connection, warning). An explicit --ledger must exist; the configured
    ledger may not exist yet (nothing served so far): then no figures and a warning."""
    if explicit is None and not Path(configured).exists():
        return None, f"no ledger at {configured} yet ([ledger] path): worker and traffic columns are empty"
    return queries.open_readonly(explicit or configured), None
