"""`isense reconcile`: the ledger's lent GPU-time per worker job against Slurm's accounting."""

from __future__ import annotations

NAME = "reconcile"
HELP = "compare the ledger's lent GPU-time per worker job with Slurm's accounting (sacct)"
DESCRIPTION = """\
For each worker job (a job of [slurm] service_account in [slurm] lend_partition named
isense-<model>) in the range: GPU-seconds lent per the ledger's worker runs, beside the
GPU-seconds Slurm accounted (sacct: start to end x allocated GPUs, every run of a
requeued job), and the requests and tokens it served per the ledger. Both sides are
clipped to the range (a running job counts up to now).

A job agrees when the two differ by at most --tolerance seconds x GPUs per run: the
ledger's clock (controller's sbatch, epilog's end event) and Slurm's (its own start and
end, whole seconds) differ by design; a preempted worker's epilog comes up to KillWait
after Slurm's end. Differences: a worker job Slurm ran that the ledger does not know,
ledger lent time (or requests) for a job Slurm does not know, and GPU-seconds beyond the
tolerance. Needs slurmdbd (sacct); the ledger is only read.

Range: --period today|yesterday|YYYY-MM-DD|YYYY-Www|YYYY-MM|YYYY-MM-DD..YYYY-MM-DD (UTC,
both days included), or --since/--until as YYYY-MM-DD (whole days) or
YYYY-MM-DDTHH:MM[:SS] (a moment, UTC). Default: today.
"""
EPILOG = """\
examples:
  isense reconcile --period yesterday
  isense reconcile --period 2025-01-01..2025-01-31 --tolerance 60 --json > jan-reconcile.json
  isense reconcile --since 2025-01-05T08:00 --until 2025-01-05T12:00
exit status: 0 ledger and Slurm agree, 3 differences found (listed), 1 sacct failed
(slurmdbd down, ...), 2 bad flags, config, ledger, no sacct or accounting disabled."""


def add_arguments(parser) -> None:
    parser.add_argument("--period", metavar="PERIOD", help="today, yesterday, a day, week, month or DAY..DAY (UTC)")
    parser.add_argument("--since", metavar="WHEN", help="start, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] UTC")
    parser.add_argument("--until", metavar="WHEN", help="end, YYYY-MM-DD (that day included) or a moment, UTC")
    parser.add_argument(
        "--tolerance", metavar="SECONDS", default="30", help="allowed difference per run and GPU (default: 30)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--ledger", metavar="PATH", help="ledger file (default: [ledger] path of the config)")


def run(args) -> int:
    import time

    from isense_slurm.config import load_config

    now = time.time()
    start, end, tolerance = _flags(args, now)  # every flag is checked before anything is opened
    cfg = load_config(args.config)
    report = _reconcile(args, cfg, start, end, tolerance, now)
    _print(args, report)
    return 0 if report.agrees else 3


def _flags(args, now: float) -> tuple[float, float, float]:
    import math

    from isense_slurm.errors import UsageError
    from isense_slurm.periods import parse_range

    try:
        tolerance = float(args.tolerance)
    except ValueError:
        raise UsageError(f"--tolerance {args.tolerance!r}: expected seconds, e.g. 30") from None
    if not math.isfinite(tolerance) or tolerance < 0:
        raise UsageError(f"--tolerance {args.tolerance!r}: expected seconds >= 0")
    start, end = parse_range(args.period, args.since, args.until, now)
    return start, end, tolerance


def _reconcile(args, cfg, start: float, end: float, tolerance: float, now: float):
    from isense_slurm.contracts.workers import WorkerRule
    from isense_slurm.meter.earnings import open_readonly
    from isense_slurm.meter.job_usage import job_usage
    from isense_slurm.report.reconcile import reconcile
    from isense_slurm.slurm.accounting import accounted_runs

    conn = open_readonly(args.ledger or cfg.ledger.path)
    try:
        ledger = job_usage(conn, start, end, now, {m.name: m.gpus for m in cfg.models})
    finally:
        conn.close()
    rule = WorkerRule.from_config(cfg)
    runs = accounted_runs(start, min(end, now), user=rule.service_account, partition=rule.lend_partition)
    workers = [r for r in runs if rule.is_worker(r.user, r.partition, r.name)]
    return reconcile(ledger, workers, start=start, end=end, now=now, tolerance=tolerance)


def _print(args, report) -> None:
    import sys

    from isense_slurm.report import reconcile_view

    if args.json:
        print(reconcile_view.to_json(report))
        return
    from rich.console import Console

    console = Console()
    if report.jobs:
        if console.is_terminal:
            reconcile_view.print_table(report, console)
        else:
            sys.stdout.write(reconcile_view.to_plain(report))
    else:
        print("no worker jobs in this range, in the ledger or in Slurm")
    for line in reconcile_view.summary(report):
        print(line)
