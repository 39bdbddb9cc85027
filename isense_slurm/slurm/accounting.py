"""Slurm's accounting of jobs: `sacct -P`, read by header names.

`isense reconcile` compares the ledger's lent GPU-time per worker job with what Slurm
accounted for the same jobs. sacct needs slurmdbd (AccountingStorageType=
accounting_storage/slurmdbd) and, for the GPU count in AllocTRES, gres/gpu among the
tracked TRES (AccountingStorageTRES=gres/gpu).

Parsing is by the header line, not by position: the field set sacct prints differs
between 22.05 and 26.05, and an admin's SACCT_FORMAT must not matter (we pass --format).
sacct runs with TZ=UTC and the standard time format, so its times parse without doubt.
Each run of a requeued job is its own record (--duplicates), with the same JobIDRaw.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from isense_slurm.errors import ConfigError, SlurmError
from isense_slurm.slurm.cli_backend import summarize_stderr

FIELDS = ("JobIDRaw", "JobName", "Partition", "User", "State", "Start", "End", "ElapsedRaw", "AllocTRES", "NodeList")
DISABLED = "Slurm accounting storage is disabled"
_DROP_ENV = re.compile(r"^(SACCT_|SLURM_TIME_FORMAT$|TZ$)")
_GPU_TRES = re.compile(r"^gres/gpu(?::[^=]+)?=(\d+)$")
_NO_TIME = {"", "Unknown", "None", "N/A"}


@dataclass(frozen=True)
class AccountedRun:
    """One run of a job as Slurm accounted it (a requeued job has one per run)."""

    job_id: str
    name: str
    partition: str | None
    user: str | None
    state: str  # COMPLETED, CANCELLED, PREEMPTED, REQUEUED, RUNNING, ... ("CANCELLED by 0" -> CANCELLED)
    start: float | None  # unix seconds; None: never started
    end: float | None  # None: still running (or never started)
    elapsed: int  # ElapsedRaw, seconds
    gpus: int  # from AllocTRES gres/gpu=N; 0 when none were allocated or tracked
    nodes: str | None  # Slurm's compact node list, None when none

    def gpu_seconds(self, start: float, end: float, now: float) -> float:
        """GPU-seconds of this run inside [start, end); a running one counts up to now."""
        if self.start is None:
            return 0.0
        run_end = self.end if self.end is not None else now
        return max(0.0, min(run_end, end) - max(self.start, start)) * self.gpus


def parse_sacct(text: str) -> list[AccountedRun]:
    """Records of `sacct -P --format=...` output (header line first), by header name."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = [name.strip().lower() for name in lines[0].split("|")]
    missing = [f for f in ("JobIDRaw", "JobName", "State", "Start", "End", "AllocTRES") if f.lower() not in header]
    if missing:
        raise SlurmError(f"sacct printed no {', '.join(missing)} column (header: {lines[0][:120]})")
    runs = []
    for line in lines[1:]:
        values = line.split("|")
        if len(values) != len(header):
            # A job name with '|' in it: sacct -P does not escape it. Not ours; skip it.
            continue
        row = dict(zip(header, values))
        start = parse_time(row["start"])
        end = parse_time(row["end"]) if start is not None else None
        elapsed = row.get("elapsedraw", "")
        runs.append(
            AccountedRun(
                job_id=row["jobidraw"].strip(),
                name=row["jobname"],
                partition=row.get("partition") or None,
                user=row.get("user") or None,
                state=row["state"].split()[0] if row["state"].strip() else "",
                start=start,
                end=end,
                elapsed=int(elapsed) if elapsed.isdigit() else 0,
                gpus=gpus_of(row["alloctres"]),
                nodes=_node_list(row.get("nodelist", "")),
            )
        )
    return runs


def parse_time(text: str) -> float | None:
    """sacct's standard time (YYYY-MM-DDTHH:MM:SS), read as UTC (sacct ran with TZ=UTC)."""
    text = text.strip()
    if text in _NO_TIME:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise SlurmError(f"sacct printed a time isense cannot read: {text!r}") from None


def gpus_of(tres: str) -> int:
    """GPUs in an AllocTRES string ('billing=4,cpu=4,gres/gpu=2,mem=1G,node=1' -> 2).

    The untyped gres/gpu=N is the total; typed ones (gres/gpu:a100=2) count only when
    the untyped entry is missing.
    """
    untyped = None
    typed = 0
    for item in tres.split(","):
        match = _GPU_TRES.match(item.strip())
        if match:
            if ":" in item.split("=")[0]:
                typed += int(match.group(1))
            else:
                untyped = int(match.group(1))
    return untyped if untyped is not None else typed


def _node_list(text: str) -> str | None:
    text = text.strip()
    return None if text in ("", "None assigned", "(null)") else text


def sacct_argv(
    start: float, end: float, *, user: str | None = None, partition: str | None = None, names: Iterable[str] = ()
) -> list[str]:
    """The sacct command line: allocations only (no steps), every run of requeued jobs."""
    argv = [
        "sacct",
        "--parsable2",
        "--allocations",
        "--duplicates",
        f"--format={','.join(FIELDS)}",
        "--starttime",
        _slurm_time(math.floor(start)),
        "--endtime",
        _slurm_time(math.ceil(end)),
    ]
    if user:
        argv += ["--user", user]
    else:
        argv.append("--allusers")
    if partition:
        argv += ["--partition", partition]
    names = list(names)
    if names:
        argv += ["--name", ",".join(names)]
    return argv


def _slurm_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _DROP_ENV.match(k)}
    env.update(TZ="UTC", SLURM_TIME_FORMAT="standard")
    return env


def accounted_runs(
    start: float,
    end: float,
    *,
    user: str | None = None,
    partition: str | None = None,
    names: Iterable[str] = (),
    timeout: float = 60.0,
) -> list[AccountedRun]:
    """Runs of jobs Slurm accounted between start and end (unix seconds).

    ConfigError (exit 2) when sacct is missing or accounting storage is off; SlurmError
    (exit 1) when sacct fails otherwise (slurmdbd down, ...).
    """
    argv = sacct_argv(start, end, user=user, partition=partition, names=names)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env())
    except FileNotFoundError:
        raise ConfigError("sacct: command not found (is slurm-client installed and on PATH?)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"sacct did not answer within {timeout:g} s (is slurmdbd up?)") from None
    message = summarize_stderr("sacct", proc.stderr or "")
    if DISABLED.lower() in f"{proc.stderr}\n{proc.stdout}".lower():
        raise ConfigError(
            f"sacct: {DISABLED}: reconcile needs slurmdbd "
            "(AccountingStorageType=accounting_storage/slurmdbd in slurm.conf; see docs/admin-guide.md)"
        )
    if proc.returncode != 0:
        raise SlurmError(f"sacct: {message or f'exit status {proc.returncode}'}")
    return parse_sacct(proc.stdout)
