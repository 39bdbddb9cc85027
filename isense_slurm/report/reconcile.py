"""`isense reconcile`, the comparison: the ledger's lent GPU-time per worker job beside
Slurm's accounting of the same job (sacct), with the tokens served. Pure: inputs in, a
report out; no ledger, no Slurm, no clock.

Both sides are clipped to the same range [start, end) (end no later than now). The two
clocks differ by design: the ledger's lent time runs from the controller's sbatch (or
Slurm's start, for a requeued run) to the epilog's end event; Slurm's from
its own job start to its own end, in whole seconds. On a preempted run the epilog comes
after the worker drained, up to KillWait after Slurm's end. So a job agrees when the
GPU-seconds differ by at most `tolerance` seconds x GPUs per run.

Findings (any one makes the command exit 3):
- `not in ledger`: Slurm ran a worker job (service account, lend partition, isense-*
  name) for longer than the tolerance and the ledger has no run of it;
- `not in Slurm`: the ledger has lent time beyond the tolerance (or served requests) for
  a job sacct does not know in this range;
- `differs`: both know it, the GPU-seconds differ by more than the tolerance.
Tokens are shown beside (Slurm counts none). A worker that served nothing is not a
finding: an idle worker is lent time, not an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from isense_slurm.contracts.workers import model_of
from isense_slurm.meter.job_usage import JobUsage
from isense_slurm.slurm.accounting import AccountedRun

DEFAULT_TOLERANCE = 30.0  # seconds per run: above the dev cluster's KillWait (5 s) plus scheduling and epilog

OK = "ok"
NOT_IN_LEDGER = "not in ledger"
NOT_IN_SLURM = "not in Slurm"
DIFFERS = "differs"


@dataclass(frozen=True)
class JobLine:
    """One worker job, as both sides see it."""

    job_id: str
    model: str | None
    nodes: str | None
    ledger_runs: int
    slurm_runs: int
    ledger_gpu_seconds: float
    slurm_gpu_seconds: float
    allowed: float  # GPU-seconds of difference within the tolerance
    requests: int
    tokens: int
    slurm_state: str | None  # the latest run's state
    finding: str

    @property
    def difference(self) -> float:
        """Ledger minus Slurm, GPU-seconds."""
        return self.ledger_gpu_seconds - self.slurm_gpu_seconds


@dataclass(frozen=True)
class Reconciliation:
    start: float
    end: float
    tolerance: float
    jobs: list[JobLine]

    @property
    def findings(self) -> list[JobLine]:
        return [j for j in self.jobs if j.finding != OK]

    @property
    def agrees(self) -> bool:
        return not self.findings


def reconcile(
    ledger: Mapping[str, JobUsage],
    slurm_runs: Iterable[AccountedRun],
    *,
    start: float,
    end: float,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Reconciliation:
    """Per job: ledger vs Slurm GPU-seconds in [start, min(end, now)), and its finding."""
    end = min(end, now)
    by_job: dict[str, list[AccountedRun]] = {}
    for run in slurm_runs:
        by_job.setdefault(run.job_id, []).append(run)
    lines = []
    for job_id in sorted(set(ledger) | set(by_job), key=_job_order):
        usage = ledger.get(job_id)
        runs = by_job.get(job_id, [])
        slurm_seconds = sum(r.gpu_seconds(start, end, now) for r in runs)
        lines.append(_line(job_id, usage, runs, slurm_seconds, tolerance))
    return Reconciliation(start, end, tolerance, lines)


def _line(
    job_id: str, usage: JobUsage | None, runs: list[AccountedRun], slurm_seconds: float, tolerance: float
) -> JobLine:
    ledger_runs = len(usage.runs) if usage else 0
    ledger_seconds = usage.gpu_seconds if usage else 0.0
    gpus = max([r.gpus for r in runs] + [r.gpus or 0 for r in (usage.runs if usage else [])] + [1])
    allowed = tolerance * gpus * max(ledger_runs, len(runs), 1)
    requests = usage.requests if usage else 0
    if not runs:
        finding = NOT_IN_SLURM if ledger_seconds > allowed or requests else OK
    elif ledger_runs == 0:
        finding = NOT_IN_LEDGER if slurm_seconds > allowed else OK
    else:
        finding = DIFFERS if abs(ledger_seconds - slurm_seconds) > allowed else OK
    latest = runs[-1] if runs else None
    nodes = latest.nodes if latest and latest.nodes else (_ledger_nodes(usage) if usage else None)
    return JobLine(
        job_id=job_id,
        model=(usage.model if usage else None) or (model_of(latest.name) or None if latest else None),
        nodes=nodes,
        ledger_runs=ledger_runs,
        slurm_runs=len(runs),
        ledger_gpu_seconds=ledger_seconds,
        slurm_gpu_seconds=slurm_seconds,
        allowed=allowed,
        requests=requests,
        tokens=usage.tokens if usage else 0,
        slurm_state=latest.state if latest else None,
        finding=finding,
    )


def _ledger_nodes(usage: JobUsage) -> str | None:
    nodes = sorted({r.node for r in usage.runs if r.node})
    return ",".join(nodes) or None


def _job_order(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (2**63, job_id)
