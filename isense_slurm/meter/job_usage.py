"""Read-only: what the ledger says per worker job over a time range (`isense reconcile`).

Lent GPU-seconds come from the `workers` table (one row per run of a job: Slurm
requeues a preempted job under the same id), each run's (ended_at, or now while it
runs, minus started_at) x GPUs, clipped to the range. Requests and tokens come from the
`requests` table by its job_id column, with the same ts >= start AND ts < end rule as
earnings and exports. Open the ledger with meter.earnings.open_readonly.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LedgerRun:
    """One run of a worker job in the ledger."""

    run: int
    model: str | None
    node: str | None
    gpus: int | None
    started_at: float
    ended_at: float | None  # None: not ended (yet)


@dataclass
class JobUsage:
    """One worker job in the ledger over a range."""

    job_id: str
    runs: list[LedgerRun] = field(default_factory=list)
    gpu_seconds: float = 0.0  # lent GPU-seconds of the runs inside the range
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def model(self) -> str | None:
        return next((r.model for r in reversed(self.runs) if r.model), None)


def job_usage(
    conn: sqlite3.Connection, start: float, end: float, now: float, model_gpus: Mapping[str, int] | None = None
) -> dict[str, JobUsage]:
    """{job id: JobUsage} of worker runs overlapping [start, end) and requests served in it.

    A run with no GPU count recorded counts the GPUs its model is configured with
    (`model_gpus`), else none.
    """
    model_gpus = model_gpus or {}
    jobs: dict[str, JobUsage] = {}
    rows = conn.execute(
        "SELECT job_id, run, model, node, gpus, started_at, ended_at FROM workers "
        "WHERE started_at < ? AND (ended_at IS NULL OR ended_at > ?) ORDER BY job_id, run",
        [end, start],
    ).fetchall()
    for job_id, run, model, node, gpus, started_at, ended_at in rows:
        usage = jobs.setdefault(job_id, JobUsage(job_id))
        ledger_run = LedgerRun(run, model, node, gpus, started_at, ended_at)
        usage.runs.append(ledger_run)
        count = gpus if gpus is not None else model_gpus.get(model or "", 0)
        run_end = ended_at if ended_at is not None else now
        usage.gpu_seconds += max(0.0, min(run_end, end) - max(started_at, start)) * count
    sums = conn.execute(
        "SELECT job_id, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) "
        "FROM requests WHERE ts >= ? AND ts < ? AND job_id IS NOT NULL GROUP BY job_id",
        [start, end],
    ).fetchall()
    for job_id, requests, prompt, completion in sums:
        usage = jobs.setdefault(job_id, JobUsage(job_id))
        usage.requests, usage.prompt_tokens, usage.completion_tokens = requests, prompt, completion
    return jobs
