"""`isense nodes`: the cluster's nodes and GPUs as isense sees them through Slurm."""

NAME = "nodes"
HELP = "list nodes with their state, partitions and GPUs (total / allocated)"
DESCRIPTION = """\
One row per node, read from Slurm through isense's access layer: state (sinfo's long
form, e.g. idle, mixed, idle+drain), partitions, GPUs configured and allocated, and
why a node is down or drained. A table on a terminal, plain columns otherwise.
"""
EPILOG = """\
examples:
  isense nodes
  isense nodes -p inference --json
exit status: 0 ok, 1 Slurm error, 2 unknown partition."""

COLUMNS = ("NODE", "STATE", "PARTITIONS", "GPUS", "GPUS_ALLOC", "REASON")


def add_arguments(parser) -> None:
    parser.add_argument("-p", "--partition", metavar="PARTITION", help="only nodes of this partition")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    import sys

    from isense_slurm.errors import UsageError

    slurm = _backend(args)
    if args.partition:
        known = [p.name for p in slurm.partitions()]
        if args.partition not in known:
            raise UsageError(f"-p {args.partition}: no such partition (known: {', '.join(known) or 'none'})")
    nodes = slurm.nodes(partition=args.partition)
    if args.json:
        print(to_json(nodes))
    elif sys.stdout.isatty():
        print_table(nodes)
    else:
        print(plain(rows(nodes)), end="")
    return 0


def _backend(args):
    """The config's [slurm] backend when there is a config file; Slurm's commands without."""
    from isense_slurm.config import load_config, resolve_config_path
    from isense_slurm.slurm import backend_for, default_backend

    if not resolve_config_path(args.config)[0].is_file():
        return default_backend()
    return backend_for(load_config(args.config).slurm)


def rows(nodes) -> list[tuple[str, ...]]:
    return [
        (n.name, n.state_text, ",".join(n.partitions), str(n.gpus_total), str(n.gpus_alloc), n.reason or "")
        for n in nodes
    ]


def plain(table: list[tuple[str, ...]]) -> str:
    """Columns padded with two spaces, header first; the last column is not padded."""
    lines = [COLUMNS, *table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = []
    for line in lines:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    return "\n".join(out) + "\n"


def print_table(nodes) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for name in COLUMNS:
        table.add_column(name, justify="right" if name.startswith("GPUS") else "left")
    for row in rows(nodes):
        table.add_row(*row)
    total = sum(n.gpus_total for n in nodes)
    alloc = sum(n.gpus_alloc for n in nodes)
    usable = sum(1 for n in nodes if n.usable)
    table.caption = f"{len(nodes)} nodes ({usable} usable), {total} GPUs, {alloc} allocated"
    Console().print(table)


def to_json(nodes) -> str:
    import json

    return json.dumps(
        [
            {
                "name": n.name,
                "state": n.state,
                "flags": sorted(n.flags),
                "usable": n.usable,
                "partitions": list(n.partitions),
                "features": list(n.features),
                "gpus_total": n.gpus_total,
                "gpus_alloc": n.gpus_alloc,
                "gpus_idle": n.gpus_idle,
                "cpus": n.cpus,
                "cpus_alloc": n.cpus_alloc,
                "reason": n.reason,
                "reason_user": n.reason_user,
                "reason_time": n.reason_time.isoformat() if n.reason_time else None,
            }
            for n in nodes
        ],
        indent=2,
    )
