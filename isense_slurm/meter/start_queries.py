"""Read-only queries of worker starts (meter/worker_starts.py writes them), behind
`isense status` and `isense top`, and the planner's measured start time of each model."""

import sqlite3
import statistics
from dataclasses import dataclass

from isense_slurm.contracts.control import START_PHASES

# What `isense status` shows, in order: seconds after the job start of each step.
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


def start_times(conn: sqlite3.Connection, since: float, last: int = 20) -> dict[str, tuple[float, int]]:
    """Per model: the median seconds from job start to registration of its `last` latest
    runs that served, among those started at or after `since`; and how many that was."""
    rows = conn.execute(
        "SELECT model, serving_at - started_at FROM workers "
        "WHERE serving_at IS NOT NULL AND model IS NOT NULL AND started_at >= ? ORDER BY started_at DESC",
        [since],
    )
    by_model: dict[str, list[float]] = {}
    for model, seconds in rows:
        values = by_model.setdefault(model, [])
        if len(values) < last:
            values.append(max(0.0, seconds))
    return {model: (statistics.median(values), len(values)) for model, values in by_model.items()}
