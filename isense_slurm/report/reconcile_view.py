"""Rendering `isense reconcile`: a rich table on a terminal, plain columns when piped,
JSON for machines, and one line per finding."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from isense_slurm.periods import iso_z
from isense_slurm.report.plain_table import plain_table
from isense_slurm.report.reconcile import OK, JobLine, Reconciliation

COLUMNS = (
    ("JOBID", False),
    ("MODEL", False),
    ("NODES", False),
    ("RUNS(L/S)", True),
    ("LEDGER_GPU_S", True),
    ("SLURM_GPU_S", True),
    ("DIFF", True),
    ("REQUESTS", True),
    ("TOKENS", True),
    ("SLURM_STATE", False),
    ("FINDING", False),
)


def _when(ts: float) -> str:
    return iso_z(datetime.fromtimestamp(ts, UTC))


def job_dict(line: JobLine) -> dict:
    return {
        "job_id": line.job_id,
        "model": line.model,
        "nodes": line.nodes,
        "ledger_runs": line.ledger_runs,
        "slurm_runs": line.slurm_runs,
        "ledger_gpu_seconds": round(line.ledger_gpu_seconds, 3),
        "slurm_gpu_seconds": round(line.slurm_gpu_seconds, 3),
        "difference_gpu_seconds": round(line.difference, 3),
        "allowed_gpu_seconds": round(line.allowed, 3),
        "requests": line.requests,
        "tokens": line.tokens,
        "slurm_state": line.slurm_state,
        "finding": line.finding,
    }


def to_json(report: Reconciliation) -> str:
    return json.dumps(
        {
            "timezone": "UTC",
            "since": _when(report.start),
            "until": _when(report.end),
            "tolerance_seconds_per_run": report.tolerance,
            "agrees": report.agrees,
            "findings": len(report.findings),
            "jobs": [job_dict(line) for line in report.jobs],
        },
        indent=2,
    )


def cells(line: JobLine) -> list[str]:
    return [
        line.job_id,
        line.model or "-",
        line.nodes or "-",
        f"{line.ledger_runs}/{line.slurm_runs}",
        f"{line.ledger_gpu_seconds:.0f}",
        f"{line.slurm_gpu_seconds:.0f}",
        f"{line.difference:+.0f}",
        str(line.requests),
        str(line.tokens),
        line.slurm_state or "-",
        line.finding,
    ]


def to_plain(report: Reconciliation) -> str:
    """sinfo-style columns: no colour, no wrapping (easy to cut/awk)."""
    return plain_table(COLUMNS, [cells(line) for line in report.jobs])


def print_table(report: Reconciliation, console) -> None:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for header, right in COLUMNS:
        table.add_column(header, justify="right" if right else "left", no_wrap=True)
    for line in report.jobs:
        table.add_row(*cells(line), style=None if line.finding == OK else "bold red")
    console.print(table)


def summary(report: Reconciliation) -> list[str]:
    """The verdict, then one line per finding naming the job."""
    span = f"{_when(report.start)} to {_when(report.end)}"
    if report.agrees:
        return [
            f"ledger and Slurm agree on {len(report.jobs)} worker job(s), {span} "
            f"(tolerance {report.tolerance:g} s x GPUs per run)"
        ]
    out = [f"{len(report.findings)} difference(s) between the ledger and Slurm, {span}:"]
    for line in report.findings:
        out.append(
            f"  job {line.job_id}: {line.finding}: ledger {line.ledger_gpu_seconds:.0f} GPU-s in "
            f"{line.ledger_runs} run(s), Slurm {line.slurm_gpu_seconds:.0f} GPU-s in {line.slurm_runs} run(s) "
            f"(allowed {line.allowed:.0f}); {line.requests} requests, {line.tokens} tokens served"
        )
    return out
