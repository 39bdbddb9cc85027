"""`isense status`: sinfo-style GPUs, workers, traffic and earnings per partition or node."""

from datetime import UTC

NAME = "status"
HELP = "sinfo-style view: GPUs training / lent / idle, workers, traffic and today's earnings"
DESCRIPTION = """\
One row per partition and node state (as sinfo prints), or per node with -N:
Slurm's state; GPUs in all, in training jobs, lent to isense workers and idle; the
workers' models and states (lent, serving, draining); requests/s and tokens/s over the
last minute; tokens (in + out) and the operator's earnings today (UTC day).

Slurm is read through its commands (sinfo/squeue/scontrol) or, with --from-json, from
saved output; the ledger is only read, never written. A table on a terminal, plain
columns when piped (easy to awk), JSON with --json.

Nodes held back: when workers of a model keep ending before they serve, the controller
stops sending that model to that node for a growing back-off. When `isense serve` runs
on this host ([gateway] listen), WORKERS counts these pairs as "held" and a line per
pair says why (on stderr when piped; "held_back" in JSON).
"""
EPILOG = """\
examples:
  isense status
  isense status -N -p inference
  isense status --json | jq .total
  isense status --from-json /tmp/snapshot   # sinfo.json + squeue.json saved earlier
exit status: 0 ok, 1 Slurm error, 2 bad flags, unknown partition, config or ledger."""


def add_arguments(parser) -> None:
    add_view_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON (money as exact decimal strings)")


def add_view_arguments(parser) -> None:
    """Flags shared with `isense top`."""
    parser.add_argument("-p", "--partition", metavar="PARTITION", help="only nodes of this partition")
    parser.add_argument("-N", "--Node", dest="per_node", action="store_true", help="one row per node")
    parser.add_argument("--ledger", metavar="PATH", help="ledger file (default: [ledger] path of the config)")
    parser.add_argument(
        "--from-json",
        metavar="DIR",
        help="read Slurm from saved output in DIR (sinfo.json or scontrol-node.json, squeue.json, "
        "optional scontrol-partition.txt) instead of running Slurm's commands",
    )


def backend_for(args, cfg=None):
    """Saved output with --from-json, else the backend of [slurm] backend."""
    if args.from_json:
        from isense_slurm.slurm.file_backend import FileBackend

        return FileBackend(args.from_json)
    from isense_slurm.slurm import backend_for as configured

    return configured(cfg.slurm if cfg is not None else None)


def collect(args, cfg, backend, conn, now: float, held_back=()):
    """One StatusReport from the backend and the (possibly absent) ledger connection;
    `held_back`: the running controller's held (node, model) pairs."""
    from datetime import datetime

    from isense_slurm.report import status_inputs
    from isense_slurm.report.status_model import build_status

    slurm = status_inputs.read_slurm(backend)
    status_inputs.check_partition(slurm, args.partition)
    figures = status_inputs.read_figures(conn, now)
    return build_status(
        slurm.nodes,
        slurm.jobs,
        slurm.partitions,
        figures,
        lend_partition=cfg.slurm.lend_partition,
        service_account=cfg.slurm.service_account,
        currency=cfg.revenue.currency,
        at=datetime.fromtimestamp(now, UTC),
        day_start=status_inputs.day_start(now),
        view="node" if args.per_node else "partition",
        partition=args.partition,
        held_back=held_back,
    )


def run(args) -> int:
    import sys
    import time

    from isense_slurm.config import load_config
    from isense_slurm.report import status_view
    from isense_slurm.report.status_inputs import open_ledger

    cfg = load_config(args.config)
    backend = backend_for(args, cfg)
    held = []
    if not args.from_json:  # a saved snapshot: the daemon's state now would not match it
        from isense_slurm.report.controller_state import held_back, read_controller

        held = held_back(read_controller(cfg)[0])
    conn, warning = open_ledger(args.ledger, cfg.ledger.path)
    try:
        report = collect(args, cfg, backend, conn, time.time(), held_back=held)
    finally:
        if conn is not None:
            conn.close()
    if warning:
        print(f"isense: warning: {warning}", file=sys.stderr)
    if args.json:
        print(status_view.to_json(report))
        return 0
    from rich.console import Console

    console = Console()
    if console.is_terminal:
        status_view.print_table(report, console)
    else:
        sys.stdout.write(status_view.to_plain(report))
        for line in status_view.held_lines(report):
            print(f"isense: {line}", file=sys.stderr)
    return 0
