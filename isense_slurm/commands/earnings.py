"""`isense earnings`: token revenue per period and group beside lent GPU-hours."""

from datetime import UTC

NAME = "earnings"
HELP = "token revenue, operator share and lent GPU-hours per day, week or month"
DESCRIPTION = """\
Tokens in / out / cached, gross revenue, the operator's share and the GPU-hours lent,
per UTC day, ISO week (Monday start) or month, optionally per node, partition, model or
client (API key name). GROSS per lent GPU-hour sits beside RAW_EQUIV, what renting the
same GPU-hours raw at [revenue] raw_gpu_hour_price would have earned.

Dates are YYYY-MM-DD in UTC; --since and --until are both included (--until 2025-01-31
covers that whole day). Without --since the report starts at the ledger's first entry;
without --until it runs to now. The ledger is only read, never written.
"""
EPILOG = """\
examples:
  isense earnings --by week --group model
  isense earnings --since 2025-01-01 --until 2025-01-31 --group client --csv > jan.csv
exit status: 0 ok, 2 bad flags, config or ledger."""


def add_arguments(parser) -> None:
    # Choices are checked in run(), not by argparse, so a bad value gets one line and exit 2.
    parser.add_argument("--by", default="day", metavar="day|week|month", help="period length (default: day)")
    parser.add_argument("--group", metavar="node|partition|model|client", help="one row per period and group")
    parser.add_argument("--since", metavar="DATE", help="first day included, YYYY-MM-DD UTC")
    parser.add_argument("--until", metavar="DATE", help="last day included, YYYY-MM-DD UTC")
    parser.add_argument("--json", action="store_true", help="print JSON (money as exact decimal strings)")
    parser.add_argument("--csv", action="store_true", help="print CSV")
    parser.add_argument("--ledger", metavar="PATH", help="ledger file (default: [ledger] path of the config)")


def run(args) -> int:
    from isense_slurm.config import load_config

    since, until = _flag_range(args)  # every flag is checked before the config or the ledger is opened
    cfg = load_config(args.config)
    report = _report(args, cfg, since, until)
    _print(args, report)
    return 0


def _flag_range(args):
    """The --since/--until range (None where not given), after checking every flag."""
    from datetime import timedelta

    from isense_slurm.errors import UsageError
    from isense_slurm.periods import BY_CHOICES, parse_date, utc_midnight
    from isense_slurm.report.earnings import GROUP_CHOICES

    if args.by not in BY_CHOICES:
        raise UsageError(f"--by {args.by!r}: use one of {', '.join(BY_CHOICES)}")
    if args.group is not None and args.group not in GROUP_CHOICES:
        raise UsageError(f"--group {args.group!r}: use one of {', '.join(GROUP_CHOICES)}")
    if args.json and args.csv:
        raise UsageError("--json and --csv: pick one")
    since = utc_midnight(parse_date(args.since, "--since")) if args.since else None
    until = utc_midnight(parse_date(args.until, "--until") + timedelta(days=1)) if args.until else None
    if since and until and since >= until:
        raise UsageError(f"--since {args.since} is after --until {args.until}")
    return since, until


def _report(args, cfg, since, until):
    """The earnings report from the ledger (read only); open ends run from its first entry to now."""
    import time
    from datetime import datetime

    from isense_slurm.errors import UsageError
    from isense_slurm.meter import earnings as queries
    from isense_slurm.meter.money import to_nanos
    from isense_slurm.periods import buckets, period_of
    from isense_slurm.report.earnings import build_report

    now = time.time()
    conn = queries.open_readonly(args.ledger or cfg.ledger.path)
    try:
        if since is None:
            first = queries.earliest(conn)
            start_day = datetime.fromtimestamp(first if first is not None else now, UTC).date()
            since = period_of(args.by, start_day).start
        if until is None:
            until = datetime.fromtimestamp(now, UTC)
        if since >= until:
            raise UsageError(f"--since {args.since}: starts after now; nothing to report yet")
        return build_report(
            conn,
            buckets(args.by, since, until),
            by=args.by,
            group=args.group,
            now=now,
            partition=cfg.slurm.lend_partition,
            model_gpus={m.name: m.gpus for m in cfg.models},
            currency=cfg.revenue.currency,
            raw_gpu_hour_nanos=to_nanos(cfg.revenue.raw_gpu_hour_price),
        )
    finally:
        conn.close()


def _print(args, report) -> None:
    import sys

    from isense_slurm.report import earnings_view

    for warning in report.warnings:
        print(f"isense: warning: {warning}", file=sys.stderr)
    if args.json:
        print(earnings_view.to_json(report))
    elif args.csv:
        sys.stdout.write(earnings_view.to_csv(report))
    else:
        from rich.console import Console

        console = Console()
        if not report.rows:
            print("no requests and no lent GPUs in this range")
        elif console.is_terminal:
            earnings_view.print_table(report, console)
        else:
            sys.stdout.write(earnings_view.to_plain(report))
